"""Staleness through Dagster's own resolver: after a change to one preset section, exactly the
assets that depend on it are stale. Two processes, as a user sees it: one materializes the chain
into a persistent instance, the preset changes, a second one loads the definitions again (as
`dagster dev` reloads a code location) and asks Dagster which assets are stale."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

MATERIALIZE = """
import json, os
from dagster import DagsterInstance, materialize
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
everything = list(defs.assets) + list(defs.asset_checks)
settings = {"settings": RetrofitSettings(device="cpu")}
with DagsterInstance.get() as instance:
    for selection, partition in json.loads(os.environ["STEPS"]):
        assert materialize(everything, selection=selection, partition_key=partition, instance=instance, resources=settings).success
"""
WHOLE_CHAIN = [[["raw_corpora", "evaluation_set", "training_pool", "base_model_scores"], None],
               [["training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"], "small"]]

STATUS = """
import json
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest
from retrofit_pipeline.definitions import defs
with DagsterInstance.get() as instance:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    partitioned = {"training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"}
    keys = ["raw_corpora", "evaluation_set", "training_pool", "base_model_scores", *sorted(partitioned)]
    print(json.dumps({k: resolver.get_status(AssetKey(k), "small" if k in partitioned else None).value for k in keys}))
"""


def _run(code: str, env: dict) -> str:
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def test_a_training_change_marks_exactly_the_checkpoint_and_its_dependants_stale(tmp_path):
    preset = tmp_path / "stale.yaml"
    values = {"extends": os.environ["RETROFIT_CONFIG"], "name": "stale", "artifacts_dir": str(tmp_path / "artifacts")}
    preset.write_text(yaml.safe_dump(values))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "RETROFIT_CONFIG": str(preset), "DAGSTER_HOME": str(home)}
    _run(MATERIALIZE, {**env, "STEPS": json.dumps(WHOLE_CHAIN)})
    fresh = json.loads(_run(STATUS, env))
    assert set(fresh.values()) == {"FRESH"}, fresh

    preset.write_text(yaml.safe_dump({**values, "training": {"learning_rate": 5.0e-4}}))  # one recipe knob
    after = json.loads(_run(STATUS, env))
    assert {key for key, status in after.items() if status == "STALE"} == {"encoder_checkpoint"}, after

    # Retrained under the new code version, the checkpoint has a new data version: what was built on
    # it (index, scores) is now stale; the mixture, the negatives and the shared data are not.
    _run(MATERIALIZE, {**env, "STEPS": json.dumps([[["encoder_checkpoint"], "small"]])})
    retrained = json.loads(_run(STATUS, env))
    assert {key for key, status in retrained.items() if status == "STALE"} == {"faiss_index", "retrieval_scores"}, retrained
