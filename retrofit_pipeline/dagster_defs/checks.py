"""Asset checks: the guarantees a retrofitted model is promoted on."""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from ..mixing import overlaps_evaluation_exactly
from ..indexing import load_index
from .assets.data import read_evaluation, training_mixture
from .assets.index import faiss_index
from .assets.negatives import hard_negatives
from .assets.scores import retrieval_scores
from .resources import RetrofitSettings


@asset_check(asset=training_mixture, blocking=True, description="No training query or positive equals an evaluation query or passage.")
def no_train_eval_overlap(context: AssetCheckExecutionContext, settings: RetrofitSettings) -> AssetCheckResult:
    paths = settings.paths()
    mixture = pd.read_parquet(paths.mixture(context.partition_key))
    leaked = mixture[overlaps_evaluation_exactly(mixture, read_evaluation(settings))]
    return AssetCheckResult(passed=leaked.empty, metadata={"overlapping_rows": len(leaked), "examples": leaked["pair_id"].head(5).tolist()})


@asset_check(asset=hard_negatives, blocking=True, description="No mined negative is the query's own positive.")
def negatives_differ_from_positive(context: AssetCheckExecutionContext, settings: RetrofitSettings) -> AssetCheckResult:
    frame = pd.read_parquet(settings.paths().negatives(context.partition_key))
    bad = sum(positive in set(negatives) for positive, negatives in zip(frame["positive"], frame["negatives"]))
    return AssetCheckResult(passed=bad == 0, metadata={"rows_with_positive_as_negative": int(bad)})


@asset_check(asset=faiss_index, description="The index holds exactly one vector per evaluation document.")
def index_covers_corpus(context: AssetCheckExecutionContext, settings: RetrofitSettings) -> AssetCheckResult:
    index, doc_ids, _ = load_index(settings.paths().index(context.partition_key))
    corpus = read_evaluation(settings).corpus
    passed = index.ntotal == len(corpus) and doc_ids == corpus["doc_id"].tolist()
    return AssetCheckResult(passed=passed, metadata={"vectors": int(index.ntotal), "documents": len(corpus)})


@asset_check(asset=retrieval_scores, description="nDCG@10 and recall@100 are present and in [0, 1] for every evaluation language.")
def scores_for_every_language(context: AssetCheckExecutionContext, settings: RetrofitSettings) -> AssetCheckResult:
    scores = pd.read_parquet(settings.paths().scores(context.partition_key) / "scores.parquet")
    expected = set(read_evaluation(settings).languages)
    missing = sorted(expected - set(scores["language"]))
    in_range = bool(scores[["ndcg_at_10", "recall_at_100"]].apply(lambda c: c.between(0, 1)).all().all())
    return AssetCheckResult(passed=not missing and in_range, metadata={"missing_languages": missing, "values_in_range": in_range})


@asset_check(asset=retrieval_scores, description="The retrofitted model is not below the base model (mean nDCG@10); languages that regress are listed.")
def retrofitted_not_below_base(context: AssetCheckExecutionContext, settings: RetrofitSettings) -> AssetCheckResult:
    paths = settings.paths()
    scores = pd.read_parquet(paths.scores(context.partition_key) / "scores.parquet").set_index("language")["ndcg_at_10"]
    base = pd.read_parquet(paths.base_scores / "scores.parquet").set_index("language")["ndcg_at_10"]
    gain = (scores - base).dropna()
    regressed = gain[gain < 0].round(4).to_dict()
    passed = float(scores.mean()) >= float(base.mean())
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR if not passed else AssetCheckSeverity.WARN,
        metadata={"mean_gain": float(scores.mean() - base.mean()), "regressed_languages": regressed},
    )
