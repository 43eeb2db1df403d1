"""Experiments side by side in one Definitions: the tiny test preset as the primary experiment
(unprefixed, as always) and an ablation of it (in-batch negatives only) under its own key prefix,
both materialized into one Dagster instance. Each keeps its own history, artifacts and checks, and
experiments_report shows them side by side from the instance's materializations."""

import os

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize

from retrofit_pipeline.comparison import scope_means
from retrofit_pipeline.config import PRESETS_DIR, load_config
from retrofit_pipeline.dagster_defs.experiment import Experiment, check_distinct, dagster_name, experiments_from_env
from retrofit_pipeline.dagster_defs.factory import build_definitions
from retrofit_pipeline.paths import ArtifactPaths

SHARED = ["raw_corpora", "evaluation_set", "training_pool", "base_model_scores"]
PER_SCALE = ["training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"]
SECOND = "tiny-no-negatives"  # a preset name that is not a Dagster name: the prefix is sanitized
PREFIX = "tiny_no_negatives"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    preset = tmp_path_factory.mktemp("experiments") / "no_negatives.yaml"
    preset.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "name": SECOND, "negatives": {"strategy": "none"}}))
    experiments = experiments_from_env(str(preset))  # a path, as RETROFIT_EXPERIMENTS may give
    defs = build_definitions(experiments)
    # The definitions' own resources (one per experiment), on the CPU.
    resources = {key: resource.model_copy(update={"device": "cpu"}) for key, resource in defs.resources.items()}
    return {"defs": defs, "instance": DagsterInstance.ephemeral(), "resources": resources, "preset": preset,
            "everything": list(defs.assets) + list(defs.asset_checks)}


def _materialize(world, keys, partition=None):
    result = materialize(world["everything"], selection=keys, partition_key=partition, instance=world["instance"],
                         resources=world["resources"])
    assert result.success
    return result


def _chain(world, prefix: list[str]):
    results = [_materialize(world, [AssetKey([*prefix, name]) for name in SHARED])]
    results.append(_materialize(world, [AssetKey([*prefix, name]) for name in PER_SCALE], "small"))
    return results


def _count(instance, key: AssetKey) -> int:
    return len(instance.fetch_materializations(key, limit=1000).records)


def _latest_metadata(instance, key: AssetKey) -> dict:
    record = instance.fetch_materializations(key, limit=1).records[0]
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


def _report(world) -> dict:
    result = _materialize(world, ["experiments_report"])
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("experiments_report"))
    return {name: value.value for name, value in event.materialization.metadata.items()}


def test_each_experiment_has_its_own_keys_groups_partitions_jobs_resources_and_code_versions(world):
    defs = world["defs"]
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    # dev_scores: defined for every experiment, materialized only with a dev split (the tiny preset has none).
    for name in SHARED + PER_SCALE + ["dev_scores", "data_scale_report", "promoted_checkpoint", "official_mteb_scores"]:
        assert name in keys and f"{PREFIX}/{name}" in keys, name
    assert "experiments_report" in keys
    assert len(keys) == 2 * 13 + 1  # SHARED, PER_SCALE and the four above, per experiment
    assert graph.get(AssetKey("training_pool")).group_name == "data"
    assert graph.get(AssetKey([PREFIX, "training_pool"])).group_name == f"{PREFIX}__data"
    assert graph.get(AssetKey("experiments_report")).group_name == "evaluation"
    # Lineage stays within the experiment.
    assert graph.get(AssetKey([PREFIX, "hard_negatives"])).parent_keys == {
        AssetKey([PREFIX, name]) for name in ("training_mixture", "training_pool", "raw_corpora")}
    assert graph.get(AssetKey("experiments_report")).parent_keys == {AssetKey("retrieval_scores"), AssetKey([PREFIX, "retrieval_scores"])}
    # Code versions from each experiment's own preset: the negatives differ, the data cleaning does not.
    version = lambda *key: graph.get(AssetKey(list(key))).code_version  # noqa: E731
    assert version(PREFIX, "hard_negatives") != version("hard_negatives")
    assert version(PREFIX, "training_pool") == version("training_pool")
    assert sorted(defs.resources) == ["settings", f"settings__{PREFIX}"]
    assert defs.resources[f"settings__{PREFIX}"].pipeline().name == SECOND
    for job in ("prepare_job", "retrofit_job", "refresh_and_retrain_job", "report_job"):
        assert {k.path[0] for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}.isdisjoint({PREFIX}), job
        prefixed = defs.resolve_job_def(f"{PREFIX}__{job}").asset_layer.executable_asset_keys
        assert prefixed and all(k.path[0] == PREFIX for k in prefixed), job
    assert defs.resolve_job_def(f"{PREFIX}__retrofit_job").partitions_def.get_partition_keys() == ["small", "large"]
    assert {s.name for s in defs.schedules} == {"weekly_retrain", f"{PREFIX}__weekly_retrain"}
    assert {s.name for s in defs.sensors} == {"new_raw_data_sensor", f"{PREFIX}__new_raw_data_sensor"}
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("training_mixture", "no_train_eval_overlap") in checks and (f"{PREFIX}/training_mixture", "no_train_eval_overlap") in checks


def test_both_histories_stand_side_by_side(world):
    instance = world["instance"]
    primary, second = load_config(), load_config(world["preset"])

    # Neither experiment has scores: the report says so instead of failing.
    empty = _report(world)
    assert empty["experiments"] == ["tiny", SECOND] and empty["experiments_without_scores"] == ["tiny", SECOND]

    _chain(world, [])
    results = _chain(world, [PREFIX])
    for name in ("retrieval_scores", "hard_negatives", "encoder_checkpoint"):
        assert _count(instance, AssetKey(name)) == 1, name
        assert _count(instance, AssetKey([PREFIX, name])) == 1, name
    # Each asset ran on its own experiment's preset, and each experiment's checks ran on its own assets.
    assert _latest_metadata(instance, AssetKey("hard_negatives"))["strategy"] == "dense"
    assert _latest_metadata(instance, AssetKey([PREFIX, "hard_negatives"]))["strategy"] == "none"
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in results[1].get_asset_check_evaluations()}
    assert checks[(f"{PREFIX}/training_mixture", "no_train_eval_overlap")] and checks[(f"{PREFIX}/faiss_index", "index_covers_corpus")]
    assert checks[(f"{PREFIX}/retrieval_scores", "scores_for_every_language")] is True
    # The experiment's checks read its own files: the second's forgetting verdict is its own comparison's.
    second_means = scope_means(pd.read_parquet(ArtifactPaths(second.experiment_dir).scores("small") / "comparison.parquet"))
    expected = all(v["ci_low"] > -second.evaluation.forgetting_margin for scope, v in second_means.items() if scope != "in-domain")
    assert checks[(f"{PREFIX}/retrieval_scores", "no_forgetting")] is expected

    # Artifacts in separate folders, artifacts/<experiment name>/ as before.
    primary_paths, second_paths = ArtifactPaths(primary.experiment_dir), ArtifactPaths(second.experiment_dir)
    assert second_paths.root == primary_paths.root.parent / SECOND
    for paths in (primary_paths, second_paths):
        assert (paths.scores("small") / "summary.json").exists() and (paths.checkpoint("small") / "model.safetensors").exists()

    # Re-materializing the second experiment adds to its history only.
    before = {key: _count(instance, key) for key in world["defs"].resolve_asset_graph().get_all_asset_keys()}
    _materialize(world, [AssetKey([PREFIX, "retrieval_scores"])], "small")
    after = {key: _count(instance, key) for key in before}
    assert {key.to_user_string(): after[key] - before[key] for key in before if after[key] != before[key]} == {f"{PREFIX}/retrieval_scores": 1}

    report = _report(world)
    assert report["experiments_with_scores"] == ["tiny", SECOND] and report["experiments_without_scores"] == []
    table = report["table"]
    primary_scores = _latest_metadata(instance, AssetKey("retrieval_scores"))
    second_scores = _latest_metadata(instance, AssetKey([PREFIX, "retrieval_scores"]))
    for experiment, scores in (("tiny", primary_scores), (SECOND, second_scores)):
        row = next(line for line in table.splitlines() if line.startswith(f"| {experiment} "))
        assert "| small " in row and f"{scores['mean/in-domain']:.4f}" in row and f"{scores['gain/in-domain']:+.4f}" in row, row
        assert scores["gain_95ci/in-domain"][1:-1].split(", ")[0] in row  # the interval, as retrieval_scores recorded it
        assert f"{scores['mean/pooled']:.4f}" in row and f"{scores['gain/bitext']:+.4f}" in row
        assert report[f"plot/{experiment}"].count("data:image/png;base64,") == 1
    folder = primary_paths.report / "experiments"
    assert (folder / "tiny.png").stat().st_size > 1000 and (folder / f"{PREFIX}.png").stat().st_size > 1000
    assert (folder / "experiments.md").read_text().strip() == table


def test_experiments_by_preset_name_and_distinct_names(tmp_path):
    experiments = experiments_from_env("default_no_negatives, default_language_diverse")
    assert [e.primary for e in experiments] == [True, False, False]
    assert experiments[1].config_path == str(PRESETS_DIR / "default_no_negatives.yaml")
    assert [e.prefix for e in experiments[1:]] == [["default_no_negatives"], ["default_language_diverse"]]
    assert experiments[2].resource_key == "settings__default_language_diverse"
    # The primary named again is taken once; another preset under an existing name is refused.
    assert len(check_distinct(experiments_from_env(os.environ["RETROFIT_CONFIG"]))) == 1
    clash = tmp_path / "clash.yaml"
    clash.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"]}))
    with pytest.raises(ValueError, match="both named 'tiny'"):
        check_distinct(experiments_from_env(str(clash)))
    with pytest.raises(FileNotFoundError, match="no preset 'no_such_preset'"):
        experiments_from_env("no_such_preset")
    assert dagster_name("sweep-lr 2e-5") == "sweep_lr_2e_5"
    assert Experiment(str(clash)).named("retrofit_job") == "tiny__retrofit_job"
