"""One GPU, shared safely: the heavy assets are in one concurrency pool whose limit the project's
instance configuration sets to 1, so two data-scale partitions launched together (as a backfill
launches them) train one after the other, never at the same time; and a run killed while it
holds the slot does not block every later run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, EventRecordsFilter

from retrofit_pipeline.dagster_defs.pools import ACCELERATOR_POOL, ensure_instance_config, free_run_slot, release_abandoned_runs, slots_held_by_unknown_runs

MATERIALIZE = """
import json, os
from dagster import DagsterInstance, materialize
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.dagster_defs.pools import owner_tags
from retrofit_pipeline.definitions import defs
with DagsterInstance.get() as instance:
    for selection, partition in json.loads(os.environ["STEPS"]):
        assert materialize(list(defs.assets), selection=selection, partition_key=partition, instance=instance,
                           resources={"settings": RetrofitSettings(device="cpu")}, tags={} if os.environ.get("NO_OWNER") else owner_tags()).success
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """An instance with the project's pool configuration and both partitions' training data."""
    root = tmp_path_factory.mktemp("pool")
    home = root / "home"
    ensure_instance_config(home)
    preset = root / "pool.yaml"
    preset.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "name": "pool", "artifacts_dir": str(root / "artifacts"),
                                      "training": {"epochs": 3}}))
    env = {**os.environ, "RETROFIT_CONFIG": str(preset), "DAGSTER_HOME": str(home)}
    prepare = [[["raw_corpora", "evaluation_set", "training_pool"], None]] + [
        [["training_mixture", "hard_negatives"], scale] for scale in ("small", "large")]
    assert _launch(env, prepare).wait(timeout=600) == 0
    return {"home": home, "env": env}


def _launch(env, steps):
    return subprocess.Popen([sys.executable, "-c", MATERIALIZE], env={**env, "STEPS": json.dumps(steps)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _instance_at(home):
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return DagsterInstance.get()
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous


def _kill_once_it_holds_the_slot(instance, process) -> None:
    """SIGKILL the training run as soon as it has claimed the pool slot (no clean-up can run)."""
    deadline = time.monotonic() + 300
    while not instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots and process.poll() is None:
        assert time.monotonic() < deadline, "the training never claimed the pool slot"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_run_killed_holding_the_pool_slot_is_released_by_the_next_one(prepared):
    instance = _instance_at(prepared["home"])
    _kill_once_it_holds_the_slot(instance, _launch(prepared["env"], [[["encoder_checkpoint"], "small"]]))
    claimed = instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots
    assert len(claimed) == 1  # what every later heavy step would wait for, forever

    assert slots_held_by_unknown_runs(instance) == []  # its owner is known: it is released below, not reported
    assert release_abandoned_runs(instance) == [claimed[0].run_id]
    assert instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots == []
    assert instance.get_run_by_id(claimed[0].run_id).status == DagsterRunStatus.FAILURE
    assert release_abandoned_runs(instance) == []  # a live or finished run is never touched
    assert _launch(prepared["env"], [[["encoder_checkpoint"], "small"]]).wait(timeout=600) == 0


def test_two_partitions_launched_together_never_train_at_the_same_time(prepared):
    home, env = prepared["home"], prepared["env"]
    launched = time.time()  # the instance may hold earlier runs of this module's other test
    backfill = [_launch(env, [[["encoder_checkpoint"], scale]]) for scale in ("small", "large")]
    for process in backfill:
        assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]

    with _instance_at(home) as instance:
        spans = []
        for event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
            records = instance.get_event_records(EventRecordsFilter(event_type=event_type), limit=100)
            spans.extend((r.event_log_entry.run_id, event_type, r.event_log_entry.timestamp) for r in records
                         if r.event_log_entry.step_key == "encoder_checkpoint" and r.event_log_entry.timestamp >= launched)
    runs = {}
    for run_id, event_type, timestamp in spans:
        runs.setdefault(run_id, {})[event_type] = timestamp
    assert len(runs) == 2, runs
    (start_a, end_a), (start_b, end_b) = sorted((r[DagsterEventType.STEP_START], r[DagsterEventType.STEP_SUCCESS]) for r in runs.values())
    assert end_a <= start_b, f"the two trainings overlapped: {start_a}-{end_a} and {start_b}-{end_b}"


def test_a_slot_held_by_a_run_of_unknown_owner_is_reported_not_freed(prepared):
    """A run without owner tags (the UI's, or an older version's) may still be running elsewhere:
    it is not released, but named, so the CLI and the sweep say why heavy steps wait."""
    instance = _instance_at(prepared["home"])
    _kill_once_it_holds_the_slot(instance, _launch({**prepared["env"], "NO_OWNER": "1"}, [[["encoder_checkpoint"], "small"]]))
    run_id = instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots[0].run_id
    assert release_abandoned_runs(instance) == []
    assert slots_held_by_unknown_runs(instance) == [run_id]
    assert free_run_slot(instance, run_id) is None  # what the note tells the user to run
    assert slots_held_by_unknown_runs(instance) == [] and instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert "no run" in free_run_slot(instance, "not-a-run")
