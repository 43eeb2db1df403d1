"""The new-raw-data sensor and the retraining schedule produce the runs they promise."""

import time

from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context, build_sensor_context

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.automation import new_raw_data_sensor, weekly_retrain


def test_sensor_requests_a_run_for_new_files_once():
    config = load_config()
    instance = DagsterInstance.ephemeral()
    incoming = config.incoming_dir
    incoming.mkdir(parents=True, exist_ok=True)
    for stale in incoming.iterdir():
        stale.unlink()

    first = new_raw_data_sensor(build_sensor_context(instance=instance))
    assert isinstance(first, SkipReason)

    (incoming / "batch-1.jsonl").write_text('{"pair_id": "n1", "query": "q", "positive": "p", "language": "de", "task_type": "bitext", "source": "new"}\n')
    context = build_sensor_context(instance=instance)
    request = new_raw_data_sensor(context)
    assert isinstance(request, RunRequest) and request.partition_key == config.default_scale

    again = new_raw_data_sensor(build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(again, SkipReason)

    time.sleep(0.01)
    (incoming / "batch-2.parquet").write_bytes(b"")
    changed = new_raw_data_sensor(build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(changed, RunRequest) and changed.run_key != request.run_key
    for path in incoming.iterdir():
        path.unlink()


def test_schedule_retrains_the_default_scale():
    request = weekly_retrain(build_schedule_context())
    assert isinstance(request, RunRequest) and request.partition_key == load_config().default_scale
