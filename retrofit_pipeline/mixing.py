"""Builds a training mixture of a given size from the raw pair pool.

Order of operations matters: duplicates and evaluation leakage are removed from the whole pool
first, then the policy samples. Sampling is a seeded shuffle within each group, so a smaller data
scale is a prefix of a larger one under the same policy (a clean data-scale curve)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dedup import MinHasher, matches_any, near_duplicate_groups, normalize_text
from .schema import EvaluationSet

MIXTURE_POLICIES = ("task_diverse", "language_diverse", "proportional")


@dataclass
class CleaningReport:
    input_rows: int
    exact_duplicates: int
    near_duplicates: int
    eval_overlap_exact: int
    eval_overlap_near: int
    output_rows: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def evaluation_texts(evaluation: EvaluationSet) -> list[str]:
    return pd.concat([evaluation.queries["text"], evaluation.corpus["text"]]).tolist()


def overlaps_evaluation_exactly(pairs: pd.DataFrame, evaluation: EvaluationSet) -> np.ndarray:
    """Rows whose query or positive equals an evaluation query or passage after normalization."""
    eval_keys = {normalize_text(t) for t in evaluation_texts(evaluation)}
    return (pairs["query"].map(normalize_text).isin(eval_keys) | pairs["positive"].map(normalize_text).isin(eval_keys)).to_numpy()


def clean_pool(
    pairs: pd.DataFrame, evaluation: EvaluationSet, near_duplicate_threshold: float = 0.9, seed: int = 13
) -> tuple[pd.DataFrame, CleaningReport]:
    """Drops exact and near-duplicate pairs, and every pair whose query or positive overlaps an
    evaluation query or passage (exactly after normalization, or as a near-duplicate)."""
    input_rows = len(pairs)
    keys = pairs["query"].map(normalize_text) + "\x1f" + pairs["positive"].map(normalize_text)
    exact = keys.duplicated(keep="first").to_numpy()
    pairs = pairs.loc[~exact].reset_index(drop=True)

    hasher = MinHasher(seed=seed)
    pair_signatures = hasher.signatures((pairs["query"] + " " + pairs["positive"]).tolist())
    representative = np.asarray(near_duplicate_groups(pair_signatures, near_duplicate_threshold))
    near = representative != np.arange(len(pairs))
    pairs = pairs.loc[~near].reset_index(drop=True)

    overlap_exact = overlaps_evaluation_exactly(pairs, evaluation)
    pairs = pairs.loc[~overlap_exact].reset_index(drop=True)

    eval_signatures = hasher.signatures(evaluation_texts(evaluation))
    overlap_near = matches_any(hasher.signatures(pairs["query"].tolist()), eval_signatures, near_duplicate_threshold) | matches_any(
        hasher.signatures(pairs["positive"].tolist()), eval_signatures, near_duplicate_threshold
    )
    pairs = pairs.loc[~overlap_near].reset_index(drop=True)
    report = CleaningReport(
        input_rows=input_rows,
        exact_duplicates=int(exact.sum()),
        near_duplicates=int(near.sum()),
        eval_overlap_exact=int(overlap_exact.sum()),
        eval_overlap_near=int(overlap_near.sum()),
        output_rows=len(pairs),
    )
    return pairs, report


def _balanced_quota(group_sizes: pd.Series, total: int) -> dict:
    """Equal share per group; groups that run out hand their unused share to the others."""
    quota = {g: 0 for g in group_sizes.index}
    remaining, open_groups = total, list(group_sizes.index)
    while remaining > 0 and open_groups:
        share = max(1, remaining // len(open_groups))
        for group in list(open_groups):
            take = min(share, group_sizes[group] - quota[group], remaining)
            quota[group] += take
            remaining -= take
            if quota[group] >= group_sizes[group]:
                open_groups.remove(group)
            if remaining == 0:
                break
    return quota


def sample_mixture(pool: pd.DataFrame, size: int, policy: str, seed: int) -> pd.DataFrame:
    """`size` rows under a mixture policy:
    - task_diverse: equal share per task type (the paper's winning recipe)
    - language_diverse: equal share per query language
    - proportional: the pool's own proportions (a uniform sample)"""
    if policy not in MIXTURE_POLICIES:
        raise ValueError(f"unknown mixture policy {policy!r}; choose one of {MIXTURE_POLICIES}")
    if size <= 0:
        raise ValueError(f"mixture size must be positive, got {size}")
    shuffled = pool.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if policy == "proportional":
        chosen = shuffled.head(size)
    else:
        column = "task_type" if policy == "task_diverse" else "language"
        quota = _balanced_quota(shuffled.groupby(column).size(), min(size, len(shuffled)))
        chosen = pd.concat([group.head(quota[name]) for name, group in shuffled.groupby(column, sort=True)])
    # Interleave groups so every training batch sees the whole mixture.
    return chosen.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)


def mixture_summary(mixture: pd.DataFrame) -> dict:
    return {
        "rows": len(mixture),
        "by_task": mixture.groupby("task_type").size().to_dict(),
        "by_language": mixture.groupby("language").size().to_dict(),
    }
