"""The Dagster Definitions: `dagster dev` (workspace.yaml) and the CLI load this module."""

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from .dagster_defs import checks
from .dagster_defs.assets import checkpoint, data, index, negatives, official, scores
from .dagster_defs.automation import (
    new_raw_data_sensor, prepare_job, refresh_and_retrain_job, report_job, retrofit_job, weekly_retrain,
)
from .dagster_defs.resources import RetrofitSettings

defs = Definitions(
    assets=load_assets_from_modules([data, negatives, checkpoint, index, scores, official]),
    asset_checks=load_asset_checks_from_modules([checks]),
    jobs=[prepare_job, retrofit_job, refresh_and_retrain_job, report_job],
    schedules=[weekly_retrain],
    sensors=[new_raw_data_sensor],
    resources={"settings": RetrofitSettings()},
)
