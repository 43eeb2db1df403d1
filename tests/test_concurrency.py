"""One GPU, shared safely: the heavy assets are in one concurrency pool whose limit the project's
instance configuration sets to 1, so two data-scale partitions launched together (as a backfill
launches them) train one after the other, never at the same time."""

import json
import os
import subprocess
import sys

import yaml
from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

from retrofit_pipeline.dagster_defs.pools import ensure_instance_config

MATERIALIZE = """
import json, os
from dagster import DagsterInstance, materialize
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
with DagsterInstance.get() as instance:
    for selection, partition in json.loads(os.environ["STEPS"]):
        assert materialize(list(defs.assets), selection=selection, partition_key=partition, instance=instance,
                           resources={"settings": RetrofitSettings(device="cpu")}).success
"""


def test_two_partitions_launched_together_never_train_at_the_same_time(tmp_path):
    home = tmp_path / "home"
    ensure_instance_config(home)
    preset = tmp_path / "pool.yaml"
    preset.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "name": "pool", "artifacts_dir": str(tmp_path / "artifacts"),
                                      "training": {"epochs": 3}}))
    env = {**os.environ, "RETROFIT_CONFIG": str(preset), "DAGSTER_HOME": str(home)}

    def launch(steps):
        return subprocess.Popen([sys.executable, "-c", MATERIALIZE], env={**env, "STEPS": json.dumps(steps)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    prepare = [[["raw_corpora", "evaluation_set", "training_pool"], None]] + [
        [["training_mixture", "hard_negatives"], scale] for scale in ("small", "large")]
    assert launch(prepare).wait(timeout=600) == 0
    backfill = [launch([[["encoder_checkpoint"], scale]]) for scale in ("small", "large")]
    for process in backfill:
        assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]

    os.environ["DAGSTER_HOME"], previous = str(home), os.environ.get("DAGSTER_HOME")
    try:
        with DagsterInstance.get() as instance:
            spans = []
            for event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
                records = instance.get_event_records(EventRecordsFilter(event_type=event_type), limit=100)
                spans.extend((r.event_log_entry.run_id, event_type, r.event_log_entry.timestamp)
                             for r in records if r.event_log_entry.step_key == "encoder_checkpoint")
    finally:
        os.environ["DAGSTER_HOME"] = previous
    runs = {}
    for run_id, event_type, timestamp in spans:
        runs.setdefault(run_id, {})[event_type] = timestamp
    assert len(runs) == 2, runs
    (start_a, end_a), (start_b, end_b) = sorted((r[DagsterEventType.STEP_START], r[DagsterEventType.STEP_SUCCESS]) for r in runs.values())
    assert end_a <= start_b, f"the two trainings overlapped: {start_a}-{end_a} and {start_b}-{end_b}"
