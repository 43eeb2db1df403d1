"""Every asset materialized by Dagster on tiny inputs, asserting its real outputs."""

import json
import re

import faiss
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.promotion import current_record
from retrofit_pipeline.schema import PAIR_COLUMNS

ALL_ASSETS = list(defs.assets)
CHECKS = list(defs.asset_checks)


@pytest.fixture(scope="module")
def instance():
    return DagsterInstance.ephemeral()


@pytest.fixture(scope="module")
def paths():
    return ArtifactPaths(load_config().experiment_dir)


def _run(selection, instance, partition=None):
    result = materialize(ALL_ASSETS + CHECKS, selection=selection, partition_key=partition, instance=instance,
                         resources={"settings": RetrofitSettings(device="cpu")})
    assert result.success
    return result


def _metadata(result, key):
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    assert events, key
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def _checks(result):
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def full_chain(instance):
    """Materializes the whole graph for one partition, stage by stage, like a user in the UI."""
    results = {"raw": _run(["raw_corpora", "evaluation_set", "training_pool"], instance)}
    results["base"] = _run(["base_model_scores"], instance)
    for key in ("training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"):
        results[key] = _run([key], instance, partition="small")
    results["report"] = _run(["data_scale_report"], instance)
    return results


def test_raw_corpora_and_evaluation_set(full_chain, paths):
    raw = pd.read_parquet(paths.raw_pairs)
    assert list(raw.columns) == PAIR_COLUMNS and len(raw) == 240
    meta = _metadata(full_chain["raw"], "evaluation_set")
    assert meta["queries"] == 120 and meta["languages"] == ["de", "fr", "ru"]


def test_training_mixture_has_partition_size_and_no_leakage(full_chain, paths):
    mixture = pd.read_parquet(paths.mixture("small"))
    assert len(mixture) == 96
    meta = _metadata(full_chain["training_mixture"], "training_mixture")
    assert meta["rows"] == 96 and meta["policy"] == "task_diverse"
    assert set(meta["rows_by_task"].values()) == {32}
    assert _checks(full_chain["training_mixture"])[("training_mixture", "no_train_eval_overlap")]


def test_hard_negatives(full_chain, paths):
    frame = pd.read_parquet(paths.negatives("small"))
    assert len(frame) == 96 and all(len(n) == 2 for n in frame["negatives"])
    assert all(p not in set(n) for p, n in zip(frame["positive"], frame["negatives"]))
    meta = _metadata(full_chain["hard_negatives"], "hard_negatives")
    assert meta["strategy"] == "dense" and 0 <= meta["share_filtered_as_false_negatives"] <= 1
    assert 0 <= meta["mean_negative_rank"] < 10


def test_encoder_checkpoint(full_chain, paths):
    checkpoint = paths.checkpoint("small")
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "modules.json").exists()
    log = json.loads((checkpoint / "training_log.json").read_text())
    assert log["steps"] == 12 and log["last_loss"] < log["first_loss"]
    card = (checkpoint / "README.md").read_text()
    assert "task_diverse" in card and "summary_retrieval" in card
    assert "| de " in card  # retrieval_scores wrote the score table into the card


def test_faiss_index(full_chain, paths):
    index = faiss.read_index(str(paths.index("small") / "index.faiss"))
    assert index.ntotal == 120 and index.d == 64
    assert _checks(full_chain["faiss_index"])[("faiss_index", "index_covers_corpus")]


def test_retrieval_scores(full_chain, paths):
    scores = pd.read_parquet(paths.scores("small") / "scores.parquet")
    assert list(zip(scores["domain"], scores["language"])) == [("ood", "de"), ("synthetic", "de"), ("synthetic", "fr"), ("synthetic", "ru")]
    for metric in ("ndcg_at_10", "recall_at_100", "mrr_at_10", "faiss_ndcg_at_10"):
        assert scores[metric].between(0, 1).all(), metric
    # The FAISS index and mteb's own search rank the same embeddings: the scores agree.
    assert (scores["ndcg_at_10"] - scores["faiss_ndcg_at_10"]).abs().max() < 0.02
    # The per-query nDCG@10 read from mteb's predictions averages to mteb's own score.
    per_query = pd.read_parquet(paths.scores("small") / "per_query.parquet")
    means = per_query.groupby(["domain", "language"])["ndcg_at_10"].mean().to_numpy()
    assert abs(means - scores["ndcg_at_10"].to_numpy()).max() < 1e-5  # mteb rounds to 5 decimals
    mteb_json = list((paths.scores("small") / "mteb").rglob("RetrofitHeldOutRetrieval.json"))
    assert mteb_json and json.loads(mteb_json[0].read_text())["scores"]["test"][0]["main_score"] >= 0
    comparison = pd.read_parquet(paths.scores("small") / "comparison.parquet")
    means = comparison[comparison["domain"] == "mean"].set_index("scope")
    assert set(means.index) == {"in-domain", "out-of-domain"}
    assert (means["ci_low"] <= means["gain"]).all() and (means["gain"] <= means["ci_high"]).all()
    assert means.loc["in-domain", "gain"] > 0  # training lifts the random tiny encoder in-domain
    checks = _checks(full_chain["retrieval_scores"])
    assert checks[("retrieval_scores", "scores_for_every_language")]
    assert checks[("retrieval_scores", "retrofitted_not_below_base")] is True
    assert ("retrieval_scores", "no_forgetting_out_of_domain") in checks
    meta = _metadata(full_chain["retrieval_scores"], "retrieval_scores")
    assert "**mean**" in meta["score_table"] and "95% CI" in meta["score_table"] and "ndcg_at_10/synthetic/ru" in meta
    assert re.fullmatch(r"\[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]", meta["gain_95ci/in-domain"])
    assert meta["corpus_embeddings_reused_from_index"] == 120  # mteb was served the index's vectors, not a second encoding


def test_quality_checks_fail_on_a_regression():
    from retrofit_pipeline.dagster_defs.checks import _scope_check

    comparison = pd.DataFrame([
        {"scope": "out-of-domain", "domain": "wiki", "language": "en", "base": 0.9, "retrofitted": 0.8, "gain": -0.1, "ci_low": -0.15, "ci_high": -0.05},
        {"scope": "out-of-domain", "domain": "mean", "language": "mean", "base": 0.9, "retrofitted": 0.8, "gain": -0.1, "ci_low": -0.15, "ci_high": -0.05},
    ])
    result = _scope_check(comparison, "out-of-domain")
    assert result.passed is False and result.metadata["regressed_subsets"].value == {"wiki.en": -0.1}


def test_data_scale_report(full_chain, paths):
    meta = _metadata(full_chain["report"], "data_scale_report")
    assert meta["scales_scored"] == ["small"]
    assert (paths.report / "data_scale.png").stat().st_size > 1000
    assert meta["plateau_scale"] == "not reached"  # one scale: no doubling measured yet


def test_job_backfill_partitions_and_schedule_are_defined():
    job = defs.resolve_job_def("retrofit_job")
    assert job.partitions_def.get_partition_keys() == ["small", "large"]
    # A backfill of retrofit_job trains every scale without reloading the shared assets each time.
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"}
    assert defs.resolve_job_def("refresh_and_retrain_job").partitions_def is job.partitions_def
    assert {s.name for s in defs.schedules} == {"weekly_retrain"}
    assert {s.name for s in defs.sensors} == {"new_raw_data_sensor"}


def test_backfill_over_every_partition_builds_each_mixture(full_chain, instance, paths):
    config = load_config()
    for scale, size in config.data_scales.items():
        _run(["training_mixture"], instance, partition=scale)
        assert len(pd.read_parquet(paths.mixture(scale))) == size
    small = set(pd.read_parquet(paths.mixture("small"))["pair_id"])
    large = set(pd.read_parquet(paths.mixture("large"))["pair_id"])
    assert small < large


def test_bad_raw_source_fails_the_asset_with_row_and_field(tmp_path, monkeypatch):
    bad = tmp_path / "incoming"
    bad.mkdir()
    (bad / "new.jsonl").write_text('{"pair_id": "x1", "query": "\\u200b", "positive": "p", "language": "de", "task_type": "bitext", "source": "drop"}\n')
    config = load_config()
    monkeypatch.setattr(config, "incoming_dir", bad)
    settings = RetrofitSettings(device="cpu")
    monkeypatch.setattr(RetrofitSettings, "pipeline", lambda self: config)
    result = materialize(ALL_ASSETS, selection=["raw_corpora", "evaluation_set"], instance=DagsterInstance.ephemeral(),
                         resources={"settings": settings}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else failure.step_failure_data.error.message
    assert "new.jsonl: line 1, field 'query': empty or whitespace-only text" in message


def test_promotion_only_when_not_below_current(full_chain, instance, paths):
    result = _run(["promoted_checkpoint"], instance)
    meta = _metadata(result, "promoted_checkpoint")
    assert meta["promoted"] is True and meta["current_scale"] == "small"
    assert (paths.promoted / "model" / "model.safetensors").exists()
    # A current model that scores higher than every candidate stays current.
    record = current_record(paths.promoted)
    current = json.loads(record.read_text())
    record.write_text(json.dumps({**current, "mean_ndcg_at_10": 1.0}))
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    assert meta["promoted"] is False and "below current" in meta["reason"] and "stored" in meta["reason"]
    assert json.loads(record.read_text())["mean_ndcg_at_10"] == 1.0
    # Scored on another evaluation set: the stored 1.0 means nothing here, the current model is re-scored.
    record.write_text(json.dumps({**current, "mean_ndcg_at_10": 1.0, "evaluation_fingerprint": "another-set"}))
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    assert "re-scored" in meta["reason"] and meta["promoted"] is True
