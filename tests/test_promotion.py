"""Promotion decisions on paired per-query scores: leakage, the in-domain interval, non-inferiority
on every other scope and the current model (on every scope, within the tolerance) decide; each rule
is tested on both sides of its threshold, with differences that are noisy per query (candidate and
base drawn independently around their levels), as real scores are."""

from pathlib import Path

import numpy as np
import pandas as pd

from retrofit_pipeline.comparison import paired_comparison, scope_means
from retrofit_pipeline.promotion import Candidate, TrainedOnEvaluation, decide

SCOPES = ("in-domain", "pooled", "bitext")
BASE = {"in-domain": 0.50, "pooled": 0.40, "bitext": 0.80}


def _per_query(level: dict[str, float], n: int = 200, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per-query scores around `level[scope]`: the same query ids for every call (paired), noise of its own per seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for scope in SCOPES:
        values = np.clip(level[scope] + rng.normal(0, noise, n), 0, 1)
        rows += [{"scope": scope, "domain": "d", "language": "de", "query_id": f"q{i}", "score": v} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def _candidate(scale: str, level: dict[str, float], leaked: int = 0, identity: str | None = None, n: int = 200,
               noise: float = 0.05) -> Candidate:
    scores = _per_query(level, n, noise, seed=1)  # independent of the base's draw: the difference is noisy
    means = scope_means(paired_comparison(_per_query(BASE, n, noise, seed=0), scores))
    return Candidate(scale, Path(scale), identity or f"weights-{scale}", "set-1", means, scores, leaked)


def test_leaky_checkpoint_is_never_promoted_even_if_best():
    leaky, clean = _candidate("8k", {**BASE, "in-domain": 0.9}, leaked=3), _candidate("2k", {**BASE, "in-domain": 0.6})
    decision = decide([leaky, clean], None, None)
    assert decision.promoted and decision.candidate is clean
    assert not decide([leaky], None, None).promoted


def test_the_in_domain_gain_must_be_above_zero_with_confidence():
    clear = _candidate("2k", {**BASE, "in-domain": 0.53})
    assert clear.means["in-domain"]["ci_low"] > 0 and decide([clear], None, None).promoted
    # A gain whose point estimate is positive but whose interval, under per-query noise, reaches below zero.
    unsure = _candidate("2k", {**BASE, "in-domain": 0.503}, n=40, noise=0.1)
    assert unsure.means["in-domain"]["gain"] > 0 and unsure.means["in-domain"]["ci_low"] <= 0
    decision = decide([unsure], None, None)
    assert not decision.promoted and "in-domain" in decision.reason and "not above zero" in decision.reason


def test_forgetting_is_non_inferiority_within_the_margin():
    # A small loss whose interval stays above -margin passes: a point estimate below the base is not forgetting.
    within = _candidate("2k", {"in-domain": 0.55, "pooled": 0.397, "bitext": 0.80}, n=400, noise=0.02)
    assert within.means["pooled"]["gain"] < 0 and within.means["pooled"]["ci_low"] > -0.01
    assert decide([within], None, None, forgetting_margin=0.01).promoted
    # A clear loss fails, and so does a noisy scope whose interval cannot rule out a loss beyond the margin,
    # even with its point estimate at or above the base's (what a point-estimate gate would pass).
    loses = _candidate("2k", {"in-domain": 0.55, "pooled": 0.37, "bitext": 0.80})
    decision = decide([loses], None, None, forgetting_margin=0.01)
    assert not decision.promoted and "pooled" in decision.reason and "forgetting" in decision.reason
    noisy = _candidate("2k", {"in-domain": 0.6, "pooled": 0.40, "bitext": 0.80})
    base = _per_query(BASE, seed=0)
    pooled = (noisy.per_query["scope"] == "pooled").to_numpy()
    swing = np.where(np.arange(pooled.sum()) % 2 == 0, 0.2, -0.2) + 0.002  # mean gain +0.002, per-query differences of +-0.2
    noisy.per_query.loc[pooled, "score"] = base.loc[pooled, "score"].to_numpy() + swing
    noisy.per_query = noisy.per_query[noisy.per_query["query_id"].isin([f"q{i}" for i in range(30)])]
    noisy.means = scope_means(paired_comparison(base[base["query_id"].isin(set(noisy.per_query["query_id"]))], noisy.per_query))
    assert noisy.means["pooled"]["gain"] > 0 and noisy.means["pooled"]["ci_low"] < -0.01
    assert not decide([noisy], None, None, forgetting_margin=0.01).promoted
    assert decide([loses], None, None, forgetting_margin=0.1).promoted


def test_a_candidate_below_the_current_model_on_one_scope_is_kept_out_and_a_tie_is_promoted():
    candidate = _candidate("2k", {"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80})
    current = {"model_identity": "weights-current", "evaluation_fingerprint": "set-1"}
    better_on_bitext = _per_query({"in-domain": 0.6, "pooled": 0.42, "bitext": 0.85}, seed=1)
    decision = decide([candidate], current, lambda fingerprint: better_on_bitext)
    assert not decision.promoted and "bitext" in decision.reason and "below the current model" in decision.reason
    assert decide([candidate], current, lambda fingerprint: better_on_bitext, promotion_tolerance=0.06).promoted
    tie = decide([candidate], current, lambda fingerprint: candidate.per_query)
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


def test_the_current_model_is_never_compared_on_its_own_training_data():
    candidate = _candidate("2k", {"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80})

    def current_scores(fingerprint: str) -> pd.DataFrame:
        raise TrainedOnEvaluation("3 of its own training pairs are in the new evaluation set")

    decision = decide([candidate], {"model_identity": "w", "evaluation_fingerprint": "set-0"}, current_scores)
    assert not decision.promoted and "own training pairs" in decision.reason


def test_the_same_weights_are_not_promoted_twice():
    candidate = _candidate("2k", {"in-domain": 0.6, "pooled": 0.42, "bitext": 0.80}, identity="abc")
    decision = decide([candidate], {"model_identity": "abc", "evaluation_fingerprint": "set-1"}, None)
    assert not decision.promoted and "current model already" in decision.reason


def test_gates_summary_states_each_verdict_the_bound_it_read_and_the_margin():
    from retrofit_pipeline.promotion import gates_summary

    def means(in_domain_low, other_low):
        return {"in-domain": {"gain": 0.03, "ci_low": in_domain_low, "ci_high": 0.05, "base": 0.7},
                "pooled": {"gain": 0.0, "ci_low": other_low, "ci_high": 0.02, "base": 0.4},
                "bitext": {"gain": 0.01, "ci_low": other_low + 0.01, "ci_high": 0.03, "base": 0.8}}

    passing = gates_summary(means(0.01, -0.015), 0.02)
    assert "in-domain gain above zero: PASS (lower bound +0.0100)" in passing
    assert "above -0.02 (evaluation.forgetting_margin 0.02): PASS (lowest: pooled -0.0150)" in passing
    failing = gates_summary(means(-0.001, -0.025), 0.02)
    assert "in-domain gain above zero: FAIL (lower bound -0.0010)" in failing and "PASS" not in failing
