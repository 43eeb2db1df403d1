"""The one resource: which preset the pipeline runs, and on which device."""

import os

from dagster import ConfigurableResource

from ..config import CONFIG_ENV, DEFAULT_PRESET, PipelineConfig, load_config
from ..paths import ArtifactPaths


class RetrofitSettings(ConfigurableResource):
    """config_path: a preset YAML (assets/presets/*.yaml); device: auto | cpu | cuda."""

    config_path: str = os.environ.get(CONFIG_ENV, str(DEFAULT_PRESET))
    device: str = "auto"

    def pipeline(self) -> PipelineConfig:
        config = load_config(self.config_path)
        config.training.device = self.device
        return config

    def paths(self) -> ArtifactPaths:
        return ArtifactPaths(self.pipeline().experiment_dir)
