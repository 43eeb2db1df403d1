"""Promotion decisions: leakage, the base model and forgetting block; regressions are kept out;
ties promote; a current model scored on another evaluation set is re-scored before comparing."""

from pathlib import Path

from retrofit_pipeline.promotion import Candidate, decide


def _candidate(scale="2k", mean=0.5, leaked=0, base=0.4, ood=None, base_ood=None, fingerprint="set-1"):
    return Candidate(scale, Path(scale), mean, leaked, fingerprint, base, ood, base_ood)


def test_leaky_checkpoint_is_never_promoted_even_if_best():
    leaky, clean = _candidate("8k", 0.9, leaked=3), _candidate("2k", 0.5)
    decision = decide([leaky, clean], None)
    assert decision.promoted and decision.candidate is clean
    assert not decide([leaky], None).promoted


def test_a_first_candidate_below_its_base_is_not_promoted():
    decision = decide([_candidate(mean=0.39, base=0.40)], None)
    assert not decision.promoted and "not above the base" in decision.reason


def test_forgetting_out_of_domain_blocks_promotion():
    decision = decide([_candidate(mean=0.6, base=0.4, ood=0.80, base_ood=0.85)], None)
    assert not decision.promoted and "forgetting" in decision.reason
    assert decide([_candidate(mean=0.6, base=0.4, ood=0.85, base_ood=0.85)], None).promoted


def test_regression_is_not_promoted_and_a_tie_is():
    candidate = _candidate(mean=0.5)
    assert not decide([candidate], {"mean_ndcg_at_10": 0.51, "evaluation_fingerprint": "set-1"}).promoted
    assert decide([candidate], {"mean_ndcg_at_10": 0.5, "evaluation_fingerprint": "set-1"}).promoted


def test_current_model_on_another_evaluation_set_is_rescored_not_compared():
    candidate = _candidate(mean=0.5)
    stored_on_old_set = {"mean_ndcg_at_10": 0.9, "evaluation_fingerprint": "set-0"}
    decision = decide([candidate], stored_on_old_set, rescore_current=lambda: 0.45)
    assert decision.promoted and decision.current_mean_ndcg_at_10 == 0.45 and "re-scored" in decision.reason
    assert not decide([candidate], stored_on_old_set, rescore_current=lambda: 0.55).promoted
    assert not decide([candidate], stored_on_old_set).promoted  # cannot re-score: keep the current model
