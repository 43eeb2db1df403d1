"""Jobs, the retraining schedule and the new-raw-data sensor."""


import json

from dagster import (
    AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason,
    define_asset_job, schedule, sensor,
)

from ..config import load_config
from ..sources import incoming_files
from .partitions import data_scale_partitions

retrofit_job = define_asset_job(
    "retrofit_job",
    selection=AssetSelection.all() - AssetSelection.assets("data_scale_report"),
    partitions_def=data_scale_partitions,
    description="The whole chain for one data scale: raw data -> mixture -> negatives -> checkpoint -> index -> scores.",
)
report_job = define_asset_job("report_job", selection=AssetSelection.assets("data_scale_report"))


def _default_scale() -> str:
    config = load_config()
    return config.default_scale or next(iter(config.data_scales))


@schedule(job=retrofit_job, cron_schedule="0 3 * * 0", default_status=DefaultScheduleStatus.STOPPED)
def weekly_retrain(context):
    """Retrains the default data scale every Sunday 03:00 on whatever raw data is there by then."""
    return RunRequest(partition_key=_default_scale(), tags={"trigger": "schedule"})


@sensor(job=retrofit_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def new_raw_data_sensor(context: SensorEvaluationContext):
    """Starts a run when standard-schema files appear or change in the config's incoming_dir."""
    config = load_config()
    files = incoming_files(config.incoming_dir)
    if not files:
        return SkipReason(f"no .jsonl/.parquet files in {config.incoming_dir}")
    state = {p.name: p.stat().st_mtime_ns for p in files}
    previous = json.loads(context.cursor) if context.cursor else {}
    if state == previous:
        return SkipReason("no new raw data since the last run")
    context.update_cursor(json.dumps(state, sort_keys=True))
    return RunRequest(run_key=json.dumps(state, sort_keys=True), partition_key=_default_scale(), tags={"trigger": "new_raw_data"})
