"""Jobs, the retraining schedule and the new-raw-data sensor."""

import json

from dagster import (
    AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason,
    define_asset_job, schedule, sensor,
)

from ..sources import incoming_files
from .partitions import data_scale_partitions
from .resources import RetrofitSettings

_SHARED = AssetSelection.assets("raw_corpora", "evaluation_set", "training_pool", "base_model_scores")
_PER_SCALE = AssetSelection.assets("training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores")

prepare_job = define_asset_job(
    "prepare_job", selection=_SHARED,
    description="What every data scale shares: raw data, the evaluation set and the base model's scores.",
)
retrofit_job = define_asset_job(
    "retrofit_job", selection=_PER_SCALE, partitions_def=data_scale_partitions,
    description="One data scale: mixture -> negatives -> checkpoint -> index -> scores. A backfill over its partitions is the data-scale curve.",
)
refresh_and_retrain_job = define_asset_job(
    "refresh_and_retrain_job", selection=_SHARED | _PER_SCALE | AssetSelection.assets("promoted_checkpoint"),
    partitions_def=data_scale_partitions,
    description="Reload the raw data, retrain and score one data scale, promote if not worse (what the schedule and the sensor run).",
)
report_job = define_asset_job(
    "report_job", selection=AssetSelection.assets("data_scale_report", "promoted_checkpoint"),
    description="The data-scale curve over every scored scale, and promotion of the best clean checkpoint.",
)


def _default_scale(settings: RetrofitSettings) -> str:
    config = settings.pipeline()
    return config.default_scale or next(iter(config.data_scales))


@schedule(job=refresh_and_retrain_job, cron_schedule="0 3 * * 0", default_status=DefaultScheduleStatus.STOPPED)
def weekly_retrain(context, settings: RetrofitSettings):
    """Retrains the default data scale every Sunday 03:00 on whatever raw data is there by then
    (the preset is the `settings` resource's, as for the assets)."""
    return RunRequest(partition_key=_default_scale(settings), tags={"trigger": "schedule"})


@sensor(job=refresh_and_retrain_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def new_raw_data_sensor(context: SensorEvaluationContext, settings: RetrofitSettings):
    """Starts a run when standard-schema files appear or change in the preset's incoming_dir (the
    preset is the `settings` resource's, as for the assets)."""
    config = settings.pipeline()
    files = incoming_files(config.incoming_dir)
    if not files:
        return SkipReason(f"no .jsonl/.parquet files in {config.incoming_dir}")
    state = {p.name: p.stat().st_mtime_ns for p in files}
    previous = json.loads(context.cursor) if context.cursor else {}
    if state == previous:
        return SkipReason("no new raw data since the last run")
    context.update_cursor(json.dumps(state, sort_keys=True))
    return RunRequest(run_key=json.dumps(state, sort_keys=True), partition_key=_default_scale(settings), tags={"trigger": "new_raw_data"})
