"""The fedcdr image and podman's Docker-compatible API service for the container tests.

Both are made through scripts/build_image.py, so the tests use the same
podman settings, storage and image as `make image`. Each helper skips the
calling test with the name of the step that failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import build_image

IMAGE = build_image.DEFAULT_TAG


def require_podman() -> None:
    """Skip unless podman can run here as root."""
    if os.geteuid() != 0:
        pytest.skip("podman: the container tests run rootful podman and need root")
    if shutil.which("podman") is None:
        pytest.skip("podman: not installed (apt-get install podman)")


def build_fedcdr_image() -> str:
    """Build (or reuse from podman's layer cache) the image; return its name."""
    require_podman()
    try:
        build_image.ensure_base_image(build_image.LOCAL_BASE_IMAGE)
        build_image.build_wheelhouse()
        build_image.build_image(IMAGE, build_image.LOCAL_BASE_IMAGE)
    except build_image.StepError as error:
        pytest.skip(f"image build: {error}")
    return IMAGE


class PodmanService:
    """`podman system service` on a unix socket in a temporary folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fedcdr-podman-"))
        self.socket = self.folder / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.log = (self.folder / "service.log").open("wb")
        self.process = subprocess.Popen(
            build_image.podman("system", "service", "--time=0", self.url),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=build_image.podman_environment(),
        )

    def wait_ready(self, timeout_s: float = 60) -> str | None:
        """Return None once the API answers a ping, else why it did not."""
        import docker

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"podman system service exited {self.process.returncode}"
            if self.socket.exists():
                try:
                    docker.DockerClient(base_url=self.url).ping()
                    return None
                except docker.errors.DockerException:
                    pass
            time.sleep(0.2)
        return f"podman system service did not answer on {self.socket} in {timeout_s} s"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def podman_service() -> Iterator[PodmanService]:
    """Yield a running API service; stop it and remove its socket afterwards."""
    require_podman()
    service = PodmanService()
    try:
        problem = service.wait_ready()
        if problem:
            pytest.skip(f"podman API service: {problem}")
        yield service
    finally:
        service.stop()
