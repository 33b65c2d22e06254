"""A stand-in Kubernetes API server with a small KubeRay operator, for ``ray.mode=rayjob``.

No Kubernetes API server (nor KubeRay) can run on the machines Graft is developed on, so the
RayJob client is tested against this: the routes ``graft.remote.kuberay`` calls, answered as
the real API server answers them (status codes, ``Status`` bodies, list shapes), and an
"operator" that does what KubeRay's K8sJobMode does for a RayJob: status Initializing, then a
submitter pod whose log is the job's output, then Complete or Failed with KubeRay's reason and
message. The entrypoint really runs (as a subprocess with the RayJob's runtime env), so a
test's job can be any command, `graft stage` included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

RAYJOBS = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


@dataclass
class FakeKube:
    """The server's state, which tests read and steer."""

    namespace: str = "graft-ns"
    crd_installed: bool = True
    refuse_spec: str = ""  # non-empty: the next RayJob ends ValidationFailed with this message
    extra_env: dict[str, str] = field(default_factory=dict)
    rayjobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod name -> metadata
    logs: dict[str, str] = field(default_factory=dict)  # pod name -> log so far
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    lock: threading.Lock = field(default_factory=threading.Lock)
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    # ------------------------------------------------------------------ the "operator"
    def reconcile(self, name: str) -> None:
        """KubeRay K8sJobMode, condensed: cluster up, submitter pod runs the entrypoint."""
        with self.lock:
            job = self.rayjobs[name]
            job["status"] = {"jobDeploymentStatus": "Initializing", "rayClusterName": f"{name}-rc"}
        time.sleep(0.3)
        if self.refuse_spec:
            with self.lock:
                job["status"] = {
                    "jobDeploymentStatus": "ValidationFailed",
                    "reason": "ValidationFailed",
                    "message": self.refuse_spec,
                }
                self.refuse_spec = ""
            return
        pod = f"{name}-{len(self.pods):05d}"
        env = {**os.environ, **self.extra_env, **_runtime_env(job["spec"])}
        process = subprocess.Popen(
            job["spec"]["entrypoint"],
            shell=True,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with self.lock:
            self.pods[pod] = {
                "name": pod,
                "namespace": self.namespace,
                "labels": {"job-name": name, "batch.kubernetes.io/job-name": name},
                "creationTimestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self.logs[pod] = ""
            self.processes[name] = process
            job["status"].update(jobDeploymentStatus="Running", jobStatus="RUNNING")
        assert process.stdout is not None
        for line in process.stdout:
            with self.lock:
                if pod in self.logs:  # not deleted with its RayJob
                    self.logs[pod] += line
        code = process.wait()
        with self.lock:
            if name not in self.rayjobs:  # deleted: KubeRay stopped the job
                return
            if code == 0:
                job["status"].update(
                    jobDeploymentStatus="Complete", jobStatus="SUCCEEDED", reason=""
                )
            else:
                tail = "".join(self.logs.get(pod, "").splitlines(keepends=True)[-3:])
                job["status"].update(
                    jobDeploymentStatus="Failed",
                    jobStatus="FAILED",
                    reason="AppFailed",
                    message=f"Job failed due to an application error, last available logs "
                    f"(truncated to 20,000 chars):\n{tail}",
                )


def _runtime_env(spec: dict[str, Any]) -> dict[str, str]:
    runtime = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
    return {k: str(v) for k, v in (runtime.get("env_vars") or {}).items()}


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def make_handler(state: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            state.requests.append((method, url.path))
            if match := RAYJOBS.match(url.path):
                self._rayjobs(method, match.group(2))
            elif (match := PODS.match(url.path)) and method == "GET":
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                key, _, value = selector.partition("=")
                with state.lock:
                    items = [
                        {"metadata": meta}
                        for meta in state.pods.values()
                        if meta["labels"].get(key) == value
                    ]
                self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
            elif (match := POD_LOG.match(url.path)) and method == "GET":
                with state.lock:
                    text = state.logs.get(match.group(2))
                if text is None:
                    self._send(404, _status_body(404, "NotFound", "pod not found"))
                else:
                    self._send(200, text, "text/plain")
            else:
                self._send(404, _status_body(404, "NotFound", "not found"))

        def _rayjobs(self, method: str, name: str | None) -> None:
            if not state.crd_installed:
                message = "the server could not find the requested resource"
                self._send(404, _status_body(404, "NotFound", message))
                return
            if method == "POST" and name is None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                new_name = body["metadata"]["name"]
                with state.lock:
                    if new_name in state.rayjobs:
                        message = f'rayjobs.ray.io "{new_name}" already exists'
                        self._send(409, _status_body(409, "AlreadyExists", message))
                        return
                    body["metadata"]["namespace"] = state.namespace
                    state.rayjobs[new_name] = body
                threading.Thread(target=state.reconcile, args=(new_name,), daemon=True).start()
                self._send(201, body)
            elif method == "GET" and name:
                with state.lock:
                    found = json.loads(json.dumps(state.rayjobs.get(name)))
                if found is None:
                    message = f'rayjobs.ray.io "{name}" not found'
                    self._send(404, _status_body(404, "NotFound", message))
                else:
                    self._send(200, found)
            elif method == "DELETE" and name:
                with state.lock:
                    found = state.rayjobs.pop(name, None)
                    process = state.processes.pop(name, None)
                    # the garbage collector deletes the submitter Job's pods with it
                    for pod in [
                        p for p, m in state.pods.items() if m["labels"]["job-name"] == name
                    ]:
                        del state.pods[pod]
                        state.logs.pop(pod, None)
                if process is not None and process.poll() is None:
                    process.kill()
                if found is None:
                    self._send(404, _status_body(404, "NotFound", f'"{name}" not found'))
                else:
                    self._send(200, {"kind": "Status", "status": "Success"})
            else:
                self._send(405, _status_body(405, "MethodNotAllowed", method))

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


class FakeKubeServer:
    """Serve ``state`` on a free local port; ``kubeconfig`` points a client at it."""

    def __init__(self, state: FakeKube, directory: Path) -> None:
        self.state = state
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "fake",
                                "namespace": state.namespace,
                            },
                        }
                    ],
                    "current-context": "fake",
                }
            )
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKubeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        for process in list(self.state.processes.values()):
            if process.poll() is None:
                process.kill()
