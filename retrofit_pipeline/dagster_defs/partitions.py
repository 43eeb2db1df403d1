"""Data-scale partitions: one key per configured scale, so a data-scale curve is a backfill."""

from dagster import StaticPartitionsDefinition

from ..config import PipelineConfig, load_config


def partitions_for(config: PipelineConfig) -> StaticPartitionsDefinition:
    """An experiment's partitions: its preset's data_scales (experiments differ in them)."""
    return StaticPartitionsDefinition(list(config.data_scales))


# The primary experiment's (RETROFIT_CONFIG, read at import).
data_scale_partitions = partitions_for(load_config())
