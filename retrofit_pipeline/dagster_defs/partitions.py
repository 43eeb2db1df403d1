"""Data-scale partitions: one key per configured scale, so a data-scale curve is a backfill."""

from dagster import StaticPartitionsDefinition

from ..config import load_config

data_scale_partitions = StaticPartitionsDefinition(list(load_config().data_scales))
