"""The new-raw-data sensor and the retraining schedule produce the runs they promise."""

import time

from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context, build_sensor_context

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.automation import new_raw_data_sensor, weekly_retrain
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings

SETTINGS = {"settings": RetrofitSettings()}


def test_sensor_requests_a_run_for_new_files_once():
    config = load_config()
    instance = DagsterInstance.ephemeral()
    incoming = config.incoming_dir
    incoming.mkdir(parents=True, exist_ok=True)
    for stale in incoming.iterdir():
        stale.unlink()

    first = new_raw_data_sensor(build_sensor_context(instance=instance, resources=SETTINGS))
    assert isinstance(first, SkipReason)

    (incoming / "batch-1.jsonl").write_text('{"pair_id": "n1", "query": "q", "positive": "p", "language": "de", "task_type": "bitext", "source": "new"}\n')
    context = build_sensor_context(instance=instance, resources=SETTINGS)
    request = new_raw_data_sensor(context)
    assert isinstance(request, RunRequest) and request.partition_key == config.default_scale

    again = new_raw_data_sensor(build_sensor_context(instance=instance, cursor=context.cursor, resources=SETTINGS))
    assert isinstance(again, SkipReason)

    time.sleep(0.01)
    (incoming / "batch-2.parquet").write_bytes(b"")
    changed = new_raw_data_sensor(build_sensor_context(instance=instance, cursor=context.cursor, resources=SETTINGS))
    assert isinstance(changed, RunRequest) and changed.run_key != request.run_key
    for path in incoming.iterdir():
        path.unlink()


def test_schedule_retrains_the_default_scale():
    request = weekly_retrain(build_schedule_context(resources=SETTINGS))
    assert isinstance(request, RunRequest) and request.partition_key == load_config().default_scale


def test_schedule_and_sensor_read_the_preset_of_the_resource_not_the_environment(tmp_path):
    import os

    preset = tmp_path / "other.yaml"
    preset.write_text(f"extends: {os.environ['RETROFIT_CONFIG']}\nname: other\ndefault_scale: large\nincoming_dir: {tmp_path / 'inbox'}\n")
    other = {"settings": RetrofitSettings(config_path=str(preset))}
    assert weekly_retrain(build_schedule_context(resources=other)).partition_key == "large"
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "new.jsonl").write_text("{}\n")
    request = new_raw_data_sensor(build_sensor_context(instance=DagsterInstance.ephemeral(), resources=other))
    assert isinstance(request, RunRequest) and request.partition_key == "large"
