"""The connection to a KFP API server: its host, a fast healthz check, the ``kfp.Client``.

Every failure to talk to the server (unreachable, refused credentials, an API error) becomes
one ``PipelineServerError`` naming the fix. The bearer token is handed to ``kfp.Client`` and
sent as an ``Authorization`` header; it is never logged.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from graft.errors import ConfigError, PipelineServerError

log = logging.getLogger(__name__)

API_PREFIX = "/apis/v2beta1"
_HEALTHZ_TIMEOUT_S = 10.0
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def normalize_host(host: str | None) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; no host is a ConfigError."""
    if not host or not host.strip():
        raise ConfigError(
            "no KFP host given; pass --host http://HOST:PORT or set KFP_HOST "
            "(e.g. after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`, "
            "use http://localhost:8080)"
        )
    host = host.strip().rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"KFP host '{host}' has no scheme; use http://{host} or https://{host}")
    return host


def open_server(host: str | None, token: str | None, insecure: bool = False) -> str:
    """The normalized host, once the token's transport is safe and healthz answered."""
    base = normalize_host(host)
    check_token_transport(base, token, insecure)
    check_server(base, token)
    return base


def check_token_transport(host: str, token: str | None, insecure: bool) -> None:
    """A bearer token goes over https, or over http to this machine (a `kubectl
    port-forward` tunnels it over the API server's TLS); anything else needs ``insecure``."""
    if not token or insecure or not host.startswith("http://"):
        return
    if (urlsplit(host).hostname or "") in _LOOPBACK_HOSTS:
        return
    raise ConfigError(
        f"refusing to send the KFP token to {host} over plain http: anyone on the path could "
        "read and reuse it. Use https://, a `kubectl port-forward` to localhost, or pass "
        "--insecure if this network is trusted"
    )


def check_server(host: str, token: str | None) -> None:
    """GET healthz once with a timeout, so a wrong host or token fails fast and clearly.

    ``kfp.Client()`` itself calls healthz at construction and retries an API error five
    times with 5 s pauses. The token is not carried to a redirect's target (another host
    could be anyone's), and a reply that is not KFP's JSON (an auth proxy's login page
    answers 200 in HTML) is an error, not a healthy server.
    """
    request = urllib.request.Request(f"{host}{API_PREFIX}/healthz")
    if token:
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=_HEALTHZ_TIMEOUT_S) as response:
            body = response.read()
            final_url = response.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise PipelineServerError(_refused(host, exc.code, token)) from None
        raise PipelineServerError(
            f"{host} answered {exc.code} to GET {API_PREFIX}/healthz, so it is not a KFP v2 "
            "API server; point --host/KFP_HOST at the KFP UI or ml-pipeline service"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineServerError(_unreachable(host, reason)) from None
    try:
        healthz = json.loads(body)
    except ValueError:
        healthz = None
    if not isinstance(healthz, dict):
        where = "" if final_url.startswith(host) else f" (redirected to {final_url})"
        raise PipelineServerError(
            f"{host} answered GET {API_PREFIX}/healthz{where} with something other than "
            "KFP's JSON, e.g. an auth proxy's login page: point --host/KFP_HOST at the KFP API "
            "itself and pass its token (KFP_TOKEN)"
        )


def _unreachable(host: str, reason: object) -> str:
    return (
        f"cannot reach the KFP API server at {host} ({reason}); check --host/KFP_HOST and "
        "that the server is up (e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
        "8080:80`)"
    )


def _refused(host: str, status: int, token: str | None) -> str:
    hint = "the token was refused; renew it" if token else "set KFP_TOKEN or pass --token"
    return f"the KFP API server at {host} refused the request ({status}); {hint}"


@contextlib.contextmanager
def server_errors(host: str, token: str | None) -> Iterator[None]:
    """Translate kfp/urllib3 failures into one PipelineServerError; keep kfp's prints quiet."""
    import kfp_server_api
    import urllib3

    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            # kfp warns on every Client() that it needs a v2 server, and prints links itself.
            warnings.simplefilter("ignore", FutureWarning)
            yield
    except kfp_server_api.ApiException as exc:
        if exc.status in (401, 403):
            raise PipelineServerError(_refused(host, exc.status, token)) from None
        if exc.status == 0:
            raise PipelineServerError(_unreachable(host, exc.reason)) from None
        raise PipelineServerError(
            f"the KFP API server at {host} answered {exc.status} {exc.reason}: "
            f"{_api_message(exc.body)}"
        ) from None
    except urllib3.exceptions.HTTPError as exc:
        raise PipelineServerError(_unreachable(host, exc)) from None
    except TimeoutError as exc:  # kfp.Client gave up on healthz after its own retries
        raise PipelineServerError(_unreachable(host, exc)) from None
    except ValueError as exc:  # kfp's own checks, e.g. two experiments with one name
        raise PipelineServerError(f"KFP at {host}: {exc}") from None
    finally:
        if captured.getvalue().strip():
            log.debug("kfp.Client said: %s", captured.getvalue().strip())


def _api_message(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()[:300] or "(no message)"
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("error") or parsed)[:300]
    return str(parsed)[:300]


def connect(host: str, token: str | None, namespace: str | None) -> Any:
    """A ``kfp.Client`` for ``host``; call it inside :func:`server_errors`."""
    import kfp

    kwargs: dict[str, Any] = {"host": host, "existing_token": token or None}
    if namespace:
        kwargs["namespace"] = namespace
    return kfp.Client(**kwargs)
