"""Promotion decisions on paired per-query scores: leakage, the in-domain interval, forgetting on any
other scope and the current model (on every scope, within the tolerance) decide; each rule is
tested on both sides of its threshold."""

from pathlib import Path

import numpy as np
import pandas as pd

from retrofit_pipeline.comparison import paired_comparison, scope_means
from retrofit_pipeline.promotion import Candidate, decide

SCOPES = ("in-domain", "pooled", "bitext")


def _per_query(level: dict[str, float], n: int = 40, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per-query scores around `level[scope]`, the same query ids and noise for every call (paired)."""
    rng = np.random.default_rng(seed)
    rows = []
    for scope in SCOPES:
        values = np.clip(level[scope] + rng.normal(0, noise, n), 0, 1)
        rows += [{"scope": scope, "domain": "d", "language": "de", "query_id": f"q{i}", "score": v} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


BASE = {"in-domain": 0.50, "pooled": 0.40, "bitext": 0.80}


def _candidate(scale: str, level: dict[str, float], leaked: int = 0, identity: str | None = None) -> Candidate:
    scores = _per_query(level)
    means = scope_means(paired_comparison(_per_query(BASE), scores))
    return Candidate(scale, Path(scale), identity or f"weights-{scale}", "set-1", means, scores, leaked)


def test_leaky_checkpoint_is_never_promoted_even_if_best():
    leaky, clean = _candidate("8k", {**BASE, "in-domain": 0.9}, leaked=3), _candidate("2k", {**BASE, "in-domain": 0.6})
    decision = decide([leaky, clean], None, None)
    assert decision.promoted and decision.candidate is clean
    assert not decide([leaky], None, None).promoted


def test_the_in_domain_gain_must_be_above_zero_with_confidence():
    assert decide([_candidate("2k", {**BASE, "in-domain": 0.55})], None, None).promoted
    decision = decide([_candidate("2k", {**BASE, "in-domain": 0.50})], None, None)  # equal to the base: interval spans zero
    assert not decision.promoted and "in-domain" in decision.reason and "not above zero" in decision.reason


def test_forgetting_on_any_other_scope_blocks_unless_within_the_tolerance():
    forgets = _candidate("2k", {"in-domain": 0.6, "pooled": 0.37, "bitext": 0.80})
    decision = decide([forgets], None, None)
    assert not decision.promoted and "pooled" in decision.reason and "forgetting" in decision.reason
    assert decide([forgets], None, None, forgetting_tolerance=0.05).promoted


def test_a_candidate_below_the_current_model_on_one_scope_is_kept_out_and_a_tie_is_promoted():
    candidate = _candidate("2k", {"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80})
    current = {"model_identity": "weights-current", "evaluation_fingerprint": "set-1"}
    better_on_bitext = _per_query({"in-domain": 0.6, "pooled": 0.42, "bitext": 0.85})
    decision = decide([candidate], current, lambda fingerprint: better_on_bitext)
    assert not decision.promoted and "bitext" in decision.reason and "below the current model" in decision.reason
    assert decide([candidate], current, lambda fingerprint: better_on_bitext, promotion_tolerance=0.06).promoted
    tie = decide([candidate], current, lambda fingerprint: _per_query({"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80}))
    assert tie.promoted and tie.against_current["bitext"]["gain"] == 0.0


def test_the_current_model_is_asked_for_scores_on_the_candidates_evaluation_set():
    candidate = _candidate("2k", {"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80})
    asked = []

    def current_scores(fingerprint: str) -> pd.DataFrame:
        asked.append(fingerprint)
        return _per_query(BASE)

    assert decide([candidate], {"model_identity": "w", "evaluation_fingerprint": "set-0"}, current_scores).promoted
    assert asked == ["set-1"]
    assert not decide([candidate], {"model_identity": "w"}, None).promoted  # no way to score the current model: keep it


def test_the_same_weights_are_not_promoted_twice():
    candidate = _candidate("2k", {"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80}, identity="abc")
    decision = decide([candidate], {"model_identity": "abc", "evaluation_fingerprint": "set-1"}, None)
    assert not decision.promoted and "current model already" in decision.reason
