"""Promotion: a new checkpoint becomes "current" only if it is clean, better than its base where
it was trained, free of forgetting everywhere else, and not worse than the current one.

The rules, on paired per-query scores of one evaluation set (comparison.py):
- clean: its training mixture does not leak the evaluation set;
- against its base: the in-domain gain's 95 % interval lies above zero (a gain is established), and
  on every other scope (held-out task, out-of-domain, pooled, cross-lingual, bitext) the interval's
  lower end is above -forgetting_margin (non-inferiority: a loss larger than the margin is ruled out
  with 95 % confidence); an evaluation without any such scope cannot show forgetting and fails;
- against the current model (re-scored when the evaluation set changed): on every scope the mean
  difference is at least -promotion_tolerance (in-domain included);
- the scores must be of these weights: the checkpoint's content identity equals the one its
  scores were computed with (a retrained checkpoint whose scores were not re-run is skipped).
The best candidate by in-domain mean is promoted; scheduled retraining can run unattended: a bad
run is trained and scored, but never served."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .artifact_io import atomic_directory, read_json, write_json, write_parquet
from .comparison import paired_comparison, scope_means
from .evaluation_scopes import IN_DOMAIN

CURRENT_RECORD = "current.json"
CURRENT_SCORES = "current_per_query.parquet"
CURRENT_TRAINING_PAIRS = "current_training_pairs.parquet"  # what the served weights were trained on (leakage on re-scoring)


class TrainedOnEvaluation(ValueError):
    """The current model cannot be re-scored on an evaluation set that holds its own training data."""


def in_domain_problems(means: dict[str, dict[str, float]]) -> list[str]:
    """Why the in-domain gain over the base (scope means of a comparison) is not established, or []."""
    in_domain = means.get(IN_DOMAIN)
    if in_domain is None:
        return ["no in-domain score"]
    if in_domain["ci_low"] <= 0:
        return [f"in-domain gain {in_domain['gain']:+.4f} [{in_domain['ci_low']:+.4f}, {in_domain['ci_high']:+.4f}] is not above zero"]
    return []


def forgetting_problems(means: dict[str, dict[str, float]], forgetting_margin: float) -> list[str]:
    """The scopes besides in-domain where a loss of more than `forgetting_margin` is not ruled out
    (the lower end of the gain's interval is at or below -margin); an evaluation without such a
    scope is a problem of its own (nothing measures forgetting)."""
    others = {scope: values for scope, values in means.items() if scope != IN_DOMAIN}
    if not others:
        return ["no scope besides in-domain was scored: nothing measures forgetting"]
    return [f"{scope}: gain {values['gain']:+.4f} [{values['ci_low']:+.4f}, {values['ci_high']:+.4f}] over the base's "
            f"{values['base']:.4f}: a loss of more than {forgetting_margin} is not ruled out (forgetting)"
            for scope, values in others.items() if values["ci_low"] <= -forgetting_margin]


def gates_summary(means: dict[str, dict[str, float]], forgetting_margin: float) -> str:
    """The two gates' verdicts on these scope means, with the bound each read and the margin, for a
    reader of the table (passing or not)."""
    in_domain = means.get(IN_DOMAIN)
    gain = ("PASS" if not in_domain_problems(means) else "FAIL") + (
        f" (lower bound {in_domain['ci_low']:+.4f})" if in_domain else " (no in-domain score)")
    others = {scope: values for scope, values in means.items() if scope != IN_DOMAIN}
    lowest = min(others, key=lambda scope: others[scope]["ci_low"]) if others else None
    forgetting = ("PASS" if not forgetting_problems(means, forgetting_margin) else "FAIL") + (
        f" (lowest: {lowest} {others[lowest]['ci_low']:+.4f})" if lowest else " (no other scope scored)")
    return (f"Gates, on the 95 % intervals: in-domain gain above zero: {gain}; no forgetting, every other scope's lower "
            f"bound above {-forgetting_margin:+g} (evaluation.forgetting_margin {forgetting_margin:g}): {forgetting}.")


def gate_against_base(means: dict[str, dict[str, float]], forgetting_margin: float) -> list[str]:
    """Why scores with these scope means (comparison against the base) fail the rules, or []."""
    return in_domain_problems(means) + forgetting_problems(means, forgetting_margin)


def gate_against_current(means: dict[str, dict[str, float]], promotion_tolerance: float) -> list[str]:
    """Why a candidate (retrofitted) is worse than the current model (base) on some scope, or []."""
    return [f"{scope}: {values['retrofitted']:.4f} is below the current model's {values['base']:.4f} ({values['gain']:+.4f})"
            for scope, values in means.items() if values["gain"] < -promotion_tolerance]


@dataclass
class Candidate:
    scale: str
    checkpoint: Path
    model_identity: str
    evaluation_fingerprint: str
    means: dict[str, dict[str, float]]  # scope -> comparison with the base
    per_query: pd.DataFrame = field(repr=False)
    leaked_rows: int = 0
    training_pairs: pd.DataFrame | None = field(default=None, repr=False)  # the pairs its weights were trained on

    @property
    def in_domain(self) -> float:
        return self.means[IN_DOMAIN]["retrofitted"] if IN_DOMAIN in self.means else float("-inf")

    def rejection(self, forgetting_margin: float) -> str | None:
        """Why this candidate may not be promoted whatever the current model is, or None."""
        if self.leaked_rows:
            return f"{self.scale}: its training mixture leaks {self.leaked_rows} evaluation rows"
        problems = gate_against_base(self.means, forgetting_margin)
        return f"{self.scale}: " + "; ".join(problems) if problems else None


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    candidate: Candidate | None
    against_current: dict[str, dict[str, float]] | None = None


def decide(candidates: list[Candidate], current: dict | None, current_scores: Callable[[str], pd.DataFrame] | None,
           forgetting_margin: float = 0.01, promotion_tolerance: float = 0.005) -> PromotionDecision:
    """`current` is the promoted model's record; `current_scores(fingerprint)` gives its per-query
    scores on the candidates' evaluation set (stored, or re-scored when the set changed)."""
    rejections = [c.rejection(forgetting_margin) for c in candidates]
    eligible = [c for c, why in zip(candidates, rejections) if why is None]
    if not eligible:
        reasons = "; ".join(r for r in rejections if r) or "no scored checkpoint"
        return PromotionDecision(False, f"no candidate qualifies: {reasons}", None)
    best = max(eligible, key=lambda c: c.in_domain)
    if current is None:
        return PromotionDecision(True, f"{best.scale} ({best.in_domain:.4f} in-domain) is the first qualifying checkpoint", best)
    if current.get("model_identity") == best.model_identity:
        return PromotionDecision(False, f"{best.scale} is the current model already (same weights)", best)
    if current_scores is None:
        return PromotionDecision(False, "the current model's scores on this evaluation set are not available", best)
    try:
        current_per_query = current_scores(best.evaluation_fingerprint)
    except TrainedOnEvaluation as error:
        return PromotionDecision(False, f"the current model cannot be compared with {best.scale} on this evaluation set: {error}", best)
    against = scope_means(paired_comparison(current_per_query, best.per_query))
    problems = gate_against_current(against, promotion_tolerance)
    if problems:
        return PromotionDecision(False, f"best candidate {best.scale} is below the current model: " + "; ".join(problems), best, against)
    return PromotionDecision(True, f"{best.scale} is not below the current model on any scope (tolerance {promotion_tolerance})", best, against)


def promote(candidate: Candidate, directory: Path) -> None:
    """Copies the checkpoint to `directory/model` with its record (identity, evaluation fingerprint,
    scope means), its per-query scores and its training pairs inside, in one atomic rename: the
    served model, the scores it is judged by and the data it was trained on can never disagree."""
    with atomic_directory(directory / "model") as tmp:
        shutil.copytree(candidate.checkpoint, tmp, dirs_exist_ok=True)
        write_json({"scale": candidate.scale, "source_checkpoint": str(candidate.checkpoint), "model_identity": candidate.model_identity,
                    "evaluation_fingerprint": candidate.evaluation_fingerprint, "means": candidate.means}, tmp / CURRENT_RECORD)
        write_parquet(candidate.per_query, tmp / CURRENT_SCORES)
        if candidate.training_pairs is not None:
            write_parquet(candidate.training_pairs[["pair_id", "query", "positive"]], tmp / CURRENT_TRAINING_PAIRS)


def own_training_pairs(checkpoint: Path, pairs: pd.DataFrame | None) -> pd.DataFrame | None:
    """`pairs` if they are the ones the weights in `checkpoint` were trained on (the fingerprint its
    training_log.json records), else None: a mixture rebuilt since is not the weights' own data."""
    from .training import pairs_fingerprint

    log = Path(checkpoint) / "training_log.json"
    recorded = read_json(log).get("training_pairs_fingerprint") if log.exists() else None
    if pairs is None or recorded is None or pairs_fingerprint(pairs) != recorded:
        return None
    return pairs


def stored_training_pairs(directory: Path) -> pd.DataFrame | None:
    """The current model's own training pairs (verified against its training log), or None."""
    path = directory / "model" / CURRENT_TRAINING_PAIRS
    return own_training_pairs(directory / "model", pd.read_parquet(path)) if path.exists() else None


def read_current(directory: Path) -> dict | None:
    path = directory / "model" / CURRENT_RECORD
    return read_json(path) if path.exists() else None


def stored_current_scores(directory: Path) -> pd.DataFrame:
    return pd.read_parquet(directory / "model" / CURRENT_SCORES)
