"""Atomic writes: every artifact is written to a temporary sibling and renamed into place,
so a crash or a full disk never leaves a half-written file or folder at its final path."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yields a temporary path beside `final`; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yields an empty temporary directory; on success it takes the place of `final`.

    The previous version is moved aside first and removed only after the new one is in place,
    so a failure at any point leaves either the old or the new directory, never a mixture."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(frame: pd.DataFrame, final: Path) -> Path:
    with atomic_path(final) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(final)


def write_json(payload: object, final: Path) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    return Path(final)


def write_text(text: str, final: Path) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def read_json(path: Path) -> object:
    return json.loads(Path(path).read_text(encoding="utf-8"))
