"""Promotion: a new checkpoint becomes "current" only if it is clean, better than its base, free of
forgetting, and not worse than the current one on the same evaluation set.

Clean: its training mixture does not leak the evaluation set. Better than its base: its in-domain
mean nDCG@10 is above the base model's. Free of forgetting: its out-of-domain mean (when the
experiment holds domains out) is not below the base model's. Not worse: its in-domain mean is at
least the current checkpoint's, both measured on the same evaluation set (the current model is
re-scored when the set changed, e.g. after a data refresh). Scheduled retraining can then run
unattended: a bad run is trained and scored, but never served."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .artifact_io import atomic_directory, read_json, write_json

# Re-encoding the same model in other batches moves nDCG@10 by float noise (~1e-6): a difference this
# small is a tie, not a regression.
TIE_TOLERANCE = 1e-4


@dataclass
class Candidate:
    scale: str
    checkpoint: Path
    mean_ndcg_at_10: float  # in-domain
    leaked_rows: int
    evaluation_fingerprint: str
    base_mean_ndcg_at_10: float
    out_of_domain_ndcg_at_10: float | None = None
    base_out_of_domain_ndcg_at_10: float | None = None

    def rejection(self) -> str | None:
        """Why this candidate may not be promoted whatever the current model is, or None."""
        if self.leaked_rows:
            return f"{self.scale}: its training mixture leaks {self.leaked_rows} evaluation rows"
        if self.mean_ndcg_at_10 <= self.base_mean_ndcg_at_10:
            return f"{self.scale}: in-domain {self.mean_ndcg_at_10:.4f} is not above the base model's {self.base_mean_ndcg_at_10:.4f}"
        if self.out_of_domain_ndcg_at_10 is not None and self.out_of_domain_ndcg_at_10 < self.base_out_of_domain_ndcg_at_10:
            return (f"{self.scale}: out-of-domain {self.out_of_domain_ndcg_at_10:.4f} is below the base model's "
                    f"{self.base_out_of_domain_ndcg_at_10:.4f} (forgetting)")
        return None


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    candidate: Candidate | None
    current_mean_ndcg_at_10: float | None


def decide(candidates: list[Candidate], current: dict | None, rescore_current: Callable[[], float] | None = None) -> PromotionDecision:
    """`current` is the promoted model's record; when it was scored on another evaluation set than
    the candidates, `rescore_current()` gives its in-domain mean on theirs (no comparison across sets)."""
    rejections = [c.rejection() for c in candidates]
    eligible = [c for c, why in zip(candidates, rejections) if why is None]
    if not eligible:
        reasons = "; ".join(r for r in rejections if r) or "no scored checkpoint"
        return PromotionDecision(False, f"no candidate qualifies: {reasons}", None, None if current is None else current["mean_ndcg_at_10"])
    best = max(eligible, key=lambda c: (c.mean_ndcg_at_10, c.out_of_domain_ndcg_at_10 or 0.0))
    if current is None:
        return PromotionDecision(True, f"{best.scale} ({best.mean_ndcg_at_10:.4f}) is the first qualifying checkpoint", best, None)
    current_mean = float(current["mean_ndcg_at_10"])
    how = "stored"
    if current.get("evaluation_fingerprint") != best.evaluation_fingerprint:
        if rescore_current is None:
            return PromotionDecision(False, "the current model was scored on another evaluation set and cannot be re-scored", best, current_mean)
        current_mean, how = rescore_current(), "re-scored on this evaluation set"
    if best.mean_ndcg_at_10 < current_mean - TIE_TOLERANCE:
        return PromotionDecision(False, f"best candidate {best.scale} ({best.mean_ndcg_at_10:.4f}) is below current ({current_mean:.4f}, {how})",
                                 best, current_mean)
    return PromotionDecision(True, f"{best.scale} ({best.mean_ndcg_at_10:.4f}) is not below current ({current_mean:.4f}, {how})", best, current_mean)


def promote(candidate: Candidate, directory: Path) -> None:
    """Copies the checkpoint to `directory/model` with its record `current.json` inside, in one
    atomic rename: the served model and the scores it is judged by can never disagree."""
    with atomic_directory(directory / "model") as tmp:
        shutil.copytree(candidate.checkpoint, tmp, dirs_exist_ok=True)
        record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(candidate).items()}
        record["source_checkpoint"] = record.pop("checkpoint")
        write_json(record, tmp / "current.json")


def current_record(directory: Path) -> Path:
    return directory / "model" / "current.json"


def read_current(directory: Path) -> dict | None:
    path = current_record(directory)
    return read_json(path) if path.exists() else None
