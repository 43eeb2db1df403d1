"""encoder_checkpoint: contrastive fine-tuning of the base encoder on the mined data."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, PipesSubprocessClient, asset

from ...distributed_training import checkpoint_metadata, progress_logger, read_training_data, torchrun_command
from ...model_card import render_model_card
from ...training import train_encoder
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL
from ..resources import RetrofitSettings

_METADATA_TYPES = {"md": MetadataValue.md, "json": MetadataValue.json, "path": MetadataValue.path}


def build(exp: Experiment) -> list:
    """encoder_checkpoint of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("training"), kinds={"pytorch", "huggingface"}, partitions_def=exp.partitions,
           deps=exp.keys("hard_negatives"), code_version=exp.code_version("encoder_checkpoint"), pool=ACCELERATOR_POOL,
           required_resource_keys={exp.resource_key})
    def encoder_checkpoint(context: AssetExecutionContext) -> MaterializeResult:
        """InfoNCE over in-batch + hard negatives; bf16 and gradient checkpointing on GPU; gradient
        caching for batches larger than memory; saved as a sentence-transformers checkpoint
        (safetensors) with a model card. Resumes from its last saved step. With
        `training.launcher: torchrun` it runs as a torchrun job (nproc_per_node processes) through Dagster Pipes."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        if config.training.launcher == "torchrun":
            return _train_with_torchrun(context, settings, scale)
        if config.training.launcher == "k8s":
            return _train_on_kubernetes(context, settings, scale)

        data = read_training_data(paths, scale)
        result = train_encoder(
            config.base_model, data, config.training, paths.checkpoint(scale), paths.training_work(scale),
            model_card=lambda r: render_model_card(config, scale, data, r, scores=None),
            on_progress=progress_logger(context.log.info, len(data), config.training.batch_size),
        )
        if result.resumed_from_step:
            context.log.info(f"resumed from step {result.resumed_from_step}")
        for warning in result.warnings:  # also in the metadata (warnings)
            context.log.warning(warning)
        metadata = checkpoint_metadata(config, data, result, str(paths.checkpoint(scale)))
        return MaterializeResult(metadata={
            key: _METADATA_TYPES[value["type"]](value["raw_value"]) if isinstance(value, dict) else value
            for key, value in metadata.items()
        })

    return [encoder_checkpoint]


def _train_with_torchrun(context: AssetExecutionContext, settings: RetrofitSettings, scale: str) -> MaterializeResult:
    config = settings.pipeline()
    command = torchrun_command(config, scale, settings.device)
    context.log.info(f"launching {' '.join(command)}")
    if config.training.nnodes > 1:
        context.log.info(f"this is one of {config.training.nnodes} nodes: start the same command on each other node "
                         f"(rendezvous at {config.training.rdzv_endpoint})")
    return PipesSubprocessClient().run(command=command, context=context).get_materialize_result()


def _train_on_kubernetes(context: AssetExecutionContext, settings: RetrofitSettings, scale: str) -> MaterializeResult:
    """The training step as a Kubernetes pod through Dagster Pipes (dagster-k8s), running
    torchrun_command inside the configured image; the pod's logs and the checkpoint metadata
    stream back into the run. Artifacts must be on storage the pod mounts (training.k8s.base_pod_spec)."""
    from dagster_k8s import PipesK8sClient  # optional: pip install dagster-k8s

    config = settings.pipeline()
    spec = dict(config.training.k8s)
    command = torchrun_command(config, scale, settings.device, python="python")
    context.log.info(f"launching a pod from {spec['image']}: {' '.join(command)}")
    return PipesK8sClient().run(
        context=context, image=spec.pop("image"), command=command, namespace=spec.pop("namespace", None),
        env=spec.pop("env", None), base_pod_spec=spec.pop("base_pod_spec", None), base_pod_meta=spec.pop("base_pod_meta", None),
    ).get_materialize_result()
