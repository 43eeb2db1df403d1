"""Every asset materialized by Dagster on tiny inputs, asserting its real outputs."""

import json
import re
import shutil
from contextlib import contextmanager

import faiss
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from safetensors.torch import load_file, save_file

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.comparison import scope_means
from retrofit_pipeline.embedding_store import model_identity
from retrofit_pipeline.promotion import gate_against_base
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
                         resources={"settings": RetrofitSettings(device="cpu")}, raise_on_error=False)
    assert result.success, {e.step_key for e in result.all_events if e.is_step_failure}
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


SCOPES = ["in-domain", "held-out task", "out-of-domain", "pooled", "cross-lingual", "bitext"]


def test_raw_corpora_and_evaluation_set(full_chain, paths):
    raw = pd.read_parquet(paths.raw_pairs)
    assert list(raw.columns) == PAIR_COLUMNS + ["identity", "passage_identity"] and len(raw) == 240
    meta = _metadata(full_chain["raw"], "evaluation_set")
    assert meta["queries"] == 60 + 30 + 24 + 60 and meta["languages"] == ["de", "fr", "ru"]


def test_training_mixture_has_partition_size_and_no_leakage(full_chain, paths):
    mixture = pd.read_parquet(paths.mixture("small"))
    assert len(mixture) == 96
    assert "passage_identity" in mixture  # positive_translations matches translations by it
    meta = _metadata(full_chain["training_mixture"], "training_mixture")
    assert meta["rows"] == 96 and meta["policy"] == "task_diverse"
    assert set(meta["rows_by_task"].values()) == {32}
    assert _checks(full_chain["training_mixture"])[("training_mixture", "no_train_eval_overlap")]


def test_hard_negatives(full_chain, paths):
    frame = pd.read_parquet(paths.negatives("small"))
    assert len(frame) == 96 and all(len(n) == 2 for n in frame["negatives"])
    assert all(p not in set(n) for p, n in zip(frame["positive"], frame["negatives"]))
    meta = _metadata(full_chain["hard_negatives"], "hard_negatives")
    ranks = [r for row in frame["negative_ranks"] for r in row]
    # Mined negatives come from the half-open rank window [0, 10); padding is marked -1.
    assert all(r == -1 or 0 <= r < 10 for r in ranks) and meta["queries_with_mined_negative"] == sum(any(r >= 0 for r in row) for row in frame["negative_ranks"])
    assert meta["queries_with_mined_negative"] > 0 and meta["strategy"] == "dense"
    assert _checks(full_chain["hard_negatives"])[("hard_negatives", "negatives_differ_from_positive")]


def test_encoder_checkpoint(full_chain, paths):
    checkpoint = paths.checkpoint("small")
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "modules.json").exists()
    log = json.loads((checkpoint / "training_log.json").read_text())
    assert log["steps"] == 12 and log["last_loss"] < log["first_loss"]
    card = (checkpoint / "README.md").read_text()
    assert "task_diverse" in card and "summary_retrieval" in card
    assert "| pooled " in card and "| de " in card  # retrieval_scores wrote the score table into the card


def test_faiss_index(full_chain, paths):
    index = faiss.read_index(str(paths.index("small") / "index.faiss"))
    # Every scored document: in-domain 60, held-out task 30, out-of-domain 60, the bitext targets 24.
    assert index.ntotal == 174 and index.d == 64
    info = json.loads((paths.index("small") / "info.json").read_text())
    assert info["model_identity"] == model_identity(paths.checkpoint("small")) and info["max_length"] == 128
    assert _checks(full_chain["faiss_index"])[("faiss_index", "index_covers_corpus")]


def test_retrieval_scores(full_chain, paths):
    scores = pd.read_parquet(paths.scores("small") / "scores.parquet")
    assert list(dict.fromkeys(scores["scope"])) == SCOPES
    assert list(zip(scores["scope"], scores["domain"], scores["language"])) == [
        ("in-domain", "synthetic", "de"), ("in-domain", "synthetic", "fr"), ("in-domain", "synthetic", "ru"),
        ("held-out task", "synthetic", "de"), ("out-of-domain", "ood", "de"),
        ("pooled", "synthetic", "de"), ("pooled", "synthetic", "fr"), ("pooled", "synthetic", "ru"),
        ("cross-lingual", "synthetic", "fr"), ("cross-lingual", "synthetic", "ru"), ("bitext", "ui", "fr")]
    # Every text mteb asks for was encoded beforehand, with the prompt mteb uses (one sorted pass, not per subset).
    for summary_file in (paths.base_scores / "summary.json", paths.scores("small") / "summary.json"):
        assert json.loads(summary_file.read_text())["texts_encoded_during_mteb"] == 0, summary_file
    # The per-query scores read from mteb's predictions average to mteb's own numbers (rounded to 5 decimals).
    per_query = pd.read_parquet(paths.scores("small") / "per_query.parquet")
    means = per_query.groupby(["scope", "domain", "language"], sort=False)["score"].mean()
    assert (means.reindex(list(zip(scores["scope"], scores["domain"], scores["language"]))).to_numpy() - scores["main_score"].to_numpy()).__abs__().max() < 1e-5
    # The FAISS index and mteb's own search rank the same embeddings: exactly the same nDCG@10.
    in_domain = scores[scores["scope"] == "in-domain"]
    unrounded = means.loc["in-domain"].to_numpy()
    assert abs(in_domain["faiss_ndcg_at_10"].to_numpy() - unrounded).max() < 1e-6
    # Pooled: every language's version of the judged document is relevant (3 per query).
    pooled = json.loads(next((paths.scores("small") / "mteb").rglob("RetrofitPooled.json")).read_text())
    assert {entry["hf_subset"] for entry in pooled["scores"]["test"]} == {"synthetic.de", "synthetic.fr", "synthetic.ru"}
    comparison = pd.read_parquet(paths.scores("small") / "comparison.parquet")
    means = comparison[comparison["domain"] == "mean"].set_index("scope")
    assert list(means.index) == SCOPES
    assert means.loc["in-domain", "gain"] > 0  # training lifts the random tiny encoder in-domain
    checks = _checks(full_chain["retrieval_scores"])
    assert checks[("retrieval_scores", "scores_for_every_language")] is True
    assert checks[("retrieval_scores", "retrofitted_beats_base_in_domain")] is bool(means.loc["in-domain", "ci_low"] > 0)
    margin = load_config().evaluation.forgetting_margin
    assert checks[("retrieval_scores", "no_forgetting")] is bool((means.drop(index="in-domain")["ci_low"] > -margin).all())
    meta = _metadata(full_chain["retrieval_scores"], "retrieval_scores")
    assert "**mean**" in meta["score_table"] and "95% CI" in meta["score_table"] and "score/pooled/synthetic/ru" in meta
    assert re.fullmatch(r"\[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]", meta["gain_95ci/pooled"])
    assert meta["max_length"] == 128 and meta["texts_encoded"] < meta["texts_served_from_store"]  # the index's vectors were reused


@contextmanager
def retrained(checkpoint, backup):
    """The checkpoint's weights changed in place (as a retraining would), restored afterwards."""
    weights = checkpoint / "model.safetensors"
    shutil.copy(weights, backup)
    try:
        tensors = load_file(str(weights))
        save_file({name: tensor * 1.01 if tensor.is_floating_point() else tensor for name, tensor in tensors.items()}, str(weights))
        yield
    finally:
        shutil.copy(backup, weights)


def test_scores_refuse_an_index_of_other_weights(full_chain, instance, paths, tmp_path):
    """A retrained checkpoint whose index was not rebuilt: scoring refuses rather than score stale vectors."""
    with retrained(paths.checkpoint("small"), tmp_path / "model.safetensors"):
        result = materialize(ALL_ASSETS + CHECKS, selection=["retrieval_scores"], partition_key="small", instance=instance,
                             resources={"settings": RetrofitSettings(device="cpu")}, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        error = failure.step_failure_data.error
        assert "re-materialize faiss_index" in (error.cause.message if error.cause else error.message)


def test_forgetting_gate_fails_on_a_regression_and_without_scopes():
    means = {"in-domain": {"base": 0.5, "retrofitted": 0.6, "gain": 0.1, "ci_low": 0.05, "ci_high": 0.15},
             "pooled": {"base": 0.5, "retrofitted": 0.49, "gain": -0.01, "ci_low": -0.03, "ci_high": 0.01}}
    # Non-inferiority on the interval: a loss of 0.03 is not ruled out, so a 0.02 margin refuses, a 0.05 one passes.
    assert any(p.startswith("pooled") for p in gate_against_base(means, 0.0))
    assert any(p.startswith("pooled") for p in gate_against_base(means, 0.02))
    assert gate_against_base(means, 0.05) == []
    # A point estimate below the base passes when the interval rules out a loss beyond the margin.
    narrow = {**means, "pooled": {**means["pooled"], "ci_low": -0.015, "ci_high": -0.005}}
    assert gate_against_base(narrow, 0.02) == [] and gate_against_base(narrow, 0.01) != []
    assert gate_against_base({"in-domain": means["in-domain"]}, 0.0) == ["no scope besides in-domain was scored: nothing measures forgetting"]
    weak = {**means, "in-domain": {**means["in-domain"], "ci_low": -0.01}}
    assert any(p.startswith("in-domain") for p in gate_against_base(weak, 0.02))


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


def test_promotion_follows_the_gate_against_the_base(full_chain, instance, paths):
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    means = scope_means(pd.read_parquet(paths.scores("small") / "comparison.parquet"))
    assert meta["promoted"] is (gate_against_base(means, load_config().evaluation.forgetting_margin) == [])


def test_promotion_only_when_not_below_current(full_chain, instance, paths):
    shutil.rmtree(paths.promoted, ignore_errors=True)
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    assert meta["promoted"] is True and meta["current_scale"] == "small" and (paths.promoted / "model" / "model.safetensors").exists()
    record_path = paths.promoted / "model" / "current.json"
    record = json.loads(record_path.read_text())
    assert record["model_identity"] == model_identity(paths.checkpoint("small")) == model_identity(paths.promoted / "model")
    # The same weights again: nothing to promote.
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    assert meta["promoted"] is False and "current model already" in meta["reason"]
    # A current model (other weights) better on one scope than the candidate by more than the tolerance stays current.
    scores_path = paths.promoted / "model" / "current_per_query.parquet"
    current_scores = pd.read_parquet(scores_path)
    better = current_scores.assign(score=np.where(current_scores["scope"] == "pooled", 1.0, current_scores["score"]))
    better.to_parquet(scores_path)
    record_path.write_text(json.dumps({**record, "model_identity": "other-weights"}))
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    assert meta["promoted"] is False and "pooled" in meta["reason"] and "below the current model" in meta["reason"]
    # Scored on another evaluation set: the stored scores mean nothing here, the current model is re-scored.
    record_path.write_text(json.dumps({**record, "model_identity": "other-weights", "evaluation_fingerprint": "another-set"}))
    meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
    assert meta["promoted"] is True and meta["against_current"]["pooled"]["gain"] == 0.0


def test_promotion_skips_a_checkpoint_whose_scores_are_of_other_weights(full_chain, instance, paths, tmp_path):
    with retrained(paths.checkpoint("small"), tmp_path / "model.safetensors"):
        meta = _metadata(_run(["promoted_checkpoint"], instance), "promoted_checkpoint")
        assert meta["promoted"] is False and meta["candidates"] == [] and "no scored checkpoint" in meta["reason"]
