"""Promotion: a new checkpoint becomes "current" only if it is clean and not worse.

Clean: its training mixture does not overlap the evaluation set. Not worse: its mean nDCG@10 on
the held-out set is at least the current checkpoint's. Scheduled retraining can then run
unattended: a bad run is trained and scored, but never served."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .artifact_io import atomic_directory, read_json, write_json


@dataclass
class Candidate:
    scale: str
    checkpoint: Path
    mean_ndcg_at_10: float
    leaked_rows: int


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    candidate: Candidate | None
    current_mean_ndcg_at_10: float | None


def decide(candidates: list[Candidate], current: dict | None) -> PromotionDecision:
    clean = [c for c in candidates if c.leaked_rows == 0]
    current_mean = None if current is None else float(current["mean_ndcg_at_10"])
    if not clean:
        return PromotionDecision(False, "no scored checkpoint with a leakage-free training set", None, current_mean)
    best = max(clean, key=lambda c: c.mean_ndcg_at_10)
    if current_mean is not None and best.mean_ndcg_at_10 < current_mean:
        return PromotionDecision(False, f"best candidate {best.scale} ({best.mean_ndcg_at_10:.4f}) is below current ({current_mean:.4f})", best, current_mean)
    return PromotionDecision(True, f"{best.scale} ({best.mean_ndcg_at_10:.4f}) is not below current ({current_mean})", best, current_mean)


def promote(candidate: Candidate, directory: Path) -> None:
    """Copies the checkpoint to `directory/model` with its record `current.json` inside, in one
    atomic rename: the served model and the scores it is judged by can never disagree."""
    with atomic_directory(directory / "model") as tmp:
        shutil.copytree(candidate.checkpoint, tmp, dirs_exist_ok=True)
        write_json({"scale": candidate.scale, "source_checkpoint": str(candidate.checkpoint),
                    "mean_ndcg_at_10": candidate.mean_ndcg_at_10}, tmp / "current.json")


def current_record(directory: Path) -> Path:
    return directory / "model" / "current.json"


def read_current(directory: Path) -> dict | None:
    path = current_record(directory)
    return read_json(path) if path.exists() else None
