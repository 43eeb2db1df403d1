"""Promotion decisions: leakage blocks, regressions are kept out, ties promote."""

from pathlib import Path

from retrofit_pipeline.promotion import Candidate, decide


def test_leaky_checkpoint_is_never_promoted_even_if_best():
    leaky = Candidate("8k", Path("a"), 0.9, leaked_rows=3)
    clean = Candidate("2k", Path("b"), 0.5, leaked_rows=0)
    decision = decide([leaky, clean], None)
    assert decision.promoted and decision.candidate is clean
    assert not decide([leaky], None).promoted


def test_regression_is_not_promoted_and_a_tie_is():
    candidate = Candidate("2k", Path("b"), 0.5, leaked_rows=0)
    assert not decide([candidate], {"mean_ndcg_at_10": 0.51}).promoted
    assert decide([candidate], {"mean_ndcg_at_10": 0.5}).promoted
