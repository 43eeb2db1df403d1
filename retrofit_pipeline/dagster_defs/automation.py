"""Jobs, the retraining schedule and the new-raw-data sensor, per experiment (named as the
experiment's: `retrofit_job` for the primary, `<name>__retrofit_job` for an additional one)."""

import json

from dagster import (
    AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason,
    define_asset_job, schedule, sensor,
)

from ..sources import incoming_files
from .experiment import Experiment, primary_experiment
from .resources import RetrofitSettings


def _default_scale(settings: RetrofitSettings) -> str:
    config = settings.pipeline()
    return config.default_scale or next(iter(config.data_scales))


def build(exp: Experiment) -> tuple[list, list, list]:
    """(jobs, schedules, sensors) of one experiment."""
    shared = AssetSelection.assets(*exp.keys("raw_corpora", "evaluation_set", "training_pool", "base_model_scores"))
    if exp.config.synthetic.enabled:  # the LLM's queries join the training pool
        shared = shared | AssetSelection.assets(exp.key("synthetic_queries"))
    per_scale = AssetSelection.assets(*exp.keys("training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"))
    if exp.config.evaluation.dev_fraction > 0:  # the dev split's scores, what choices are made on, beside the reported ones
        per_scale = per_scale | AssetSelection.assets(exp.key("dev_scores"))

    prepare_job = define_asset_job(
        exp.named("prepare_job"), selection=shared,
        description="What every data scale shares: raw data, the evaluation set and the base model's scores.",
    )
    retrofit_job = define_asset_job(
        exp.named("retrofit_job"), selection=per_scale, partitions_def=exp.partitions,
        description="One data scale: mixture -> negatives -> checkpoint -> index -> scores (and dev scores). A backfill over its partitions is the data-scale curve.",
    )
    refresh_and_retrain_job = define_asset_job(
        exp.named("refresh_and_retrain_job"), selection=shared | per_scale | AssetSelection.assets(exp.key("promoted_checkpoint")),
        partitions_def=exp.partitions,
        description="Reload the raw data, retrain and score one data scale, promote if not worse (what the schedule and the sensor run).",
    )
    report_job = define_asset_job(
        exp.named("report_job"), selection=AssetSelection.assets(*exp.keys("data_scale_report", "promoted_checkpoint")),
        description="The data-scale curve over every scored scale, and promotion of the best clean checkpoint.",
    )

    @schedule(name=exp.named("weekly_retrain"), job=refresh_and_retrain_job, cron_schedule="0 3 * * 0",
              default_status=DefaultScheduleStatus.STOPPED, required_resource_keys={exp.resource_key})
    def weekly_retrain(context, **_resources):  # called directly (tests), Dagster passes the resources by key too
        """Retrains the default data scale every Sunday 03:00 on whatever raw data is there by then
        (the preset is the experiment's settings resource's, as for the assets)."""
        return RunRequest(partition_key=_default_scale(exp.settings(context)), tags={"trigger": "schedule"})

    @sensor(name=exp.named("new_raw_data_sensor"), job=refresh_and_retrain_job, minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.STOPPED, required_resource_keys={exp.resource_key})
    def new_raw_data_sensor(context: SensorEvaluationContext, **_resources):
        """Starts a run when standard-schema files appear or change in the preset's incoming_dir (the
        preset is the experiment's settings resource's, as for the assets)."""
        settings = exp.settings(context)
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

    return [prepare_job, retrofit_job, refresh_and_retrain_job, report_job], [weekly_retrain], [new_raw_data_sensor]


# The primary experiment's, under the names they always had (resource key `settings`).
(prepare_job, retrofit_job, refresh_and_retrain_job, report_job), (weekly_retrain,), (new_raw_data_sensor,) = build(primary_experiment())
