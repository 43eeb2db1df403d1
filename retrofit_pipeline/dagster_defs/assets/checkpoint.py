"""encoder_checkpoint: contrastive fine-tuning of the base encoder on the mined data."""

import shutil

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, PipesSubprocessClient, asset

from ...artifact_io import atomic_directory, write_json
from ...comparison import paired_comparison, scope_means
from ...distributed_training import checkpoint_metadata, progress_logger, read_training_data, torchrun_command
from ...merging import choose_alpha, write_merged
from ...model_card import render_model_card
from ...reporting import merge_curve_png, merge_curve_table, png_markdown
from ...scoring import model_folder, read_scores, score_encoder, scoring_encoder
from ...teacher import distillation_targets
from ...trainer import train_encoder
from ..evaluation_plan import evaluation_plan
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
        config = settings.pipeline()
        scale = context.partition_key
        if config.training.launcher == "torchrun":
            result = _train_with_torchrun(context, settings, scale)
        elif config.training.launcher == "k8s":
            result = _train_on_kubernetes(context, settings, scale)
        else:
            result = _train_here(context, settings, scale)
        if not config.merge.alphas:
            return result
        return MaterializeResult(metadata={**(result.metadata or {}), **_merge_with_base(context, settings, scale)})

    return [encoder_checkpoint]


def _train_here(context: AssetExecutionContext, settings: RetrofitSettings, scale: str) -> MaterializeResult:
    config, paths = settings.pipeline(), settings.paths()
    data = read_training_data(paths, scale)
    targets = _teacher_targets(context, config, data)
    result = train_encoder(
        config.base_model, data, config.training, paths.checkpoint(scale), paths.training_work(scale),
        model_card=lambda r: render_model_card(config, scale, data, r, scores=None),
        on_progress=progress_logger(context.log.info, len(data), config.training.batch_size), teacher_targets=targets,
    )
    if result.resumed_from_step:
        context.log.info(f"resumed from step {result.resumed_from_step}")
    for warning in result.warnings:  # also in the metadata (warnings)
        context.log.warning(warning)
    metadata = checkpoint_metadata(config, data, result, str(paths.checkpoint(scale)), targets.metadata if targets else None)
    return MaterializeResult(metadata={
        key: _METADATA_TYPES[value["type"]](value["raw_value"]) if isinstance(value, dict) else value
        for key, value in metadata.items()
    })


def _teacher_targets(context: AssetExecutionContext, config, data):
    """distill_from teacher: the teacher's embeddings of every training text, through its store
    (None otherwise). Computed here, in one process, also before a torchrun launch: the ranks then
    only read the store."""
    targets = distillation_targets(config, data)
    if targets is not None:
        context.log.info(f"teacher {config.negatives.teacher}: {targets.metadata['encoded']} texts encoded, "
                         f"{targets.metadata['served']} served by its store, in {targets.metadata['teacher_seconds']} s")
    return targets


def _merge_with_base(context: AssetExecutionContext, settings: RetrofitSettings, scale: str) -> dict:
    """The trained weights averaged with the base's, alpha chosen on the dev split (merging.py):
    each alpha in merge.alphas is written, scored on the dev scopes and paired against the base's
    dev scores; the chosen one replaces the checkpoint (the trained weights stay in the work
    folder, `trained/`). Returns the metadata: the alpha curve as a table and a plot."""
    config, paths = settings.pipeline(), settings.paths()
    plan = evaluation_plan(settings)
    if not plan.dev_subsets:
        raise ValueError("merge.alphas needs dev queries: evaluation.dev_fraction selects none of this evaluation set")
    if not (paths.base_scores / "dev" / "summary.json").exists():
        raise ValueError(f"{paths.base_scores / 'dev'}: the base model's dev-split scores are missing (base_model_scores "
                         "scores the dev split only when merge.alphas is set): re-materialize base_model_scores")
    base_per_query, _ = read_scores(paths.base_scores / "dev", plan.dev_fingerprint, "base_model_scores (dev split)")
    work = paths.training_work(scale) / "merge"
    trained = work / "trained"
    with atomic_directory(trained) as tmp:
        shutil.copytree(paths.checkpoint(scale), tmp, dirs_exist_ok=True)
    base_dir = model_folder(config.base_model)
    curve = []
    for alpha in sorted(set(config.merge.alphas)):
        candidate = write_merged(trained, base_dir, alpha, work / f"alpha-{alpha:g}")
        encoder = scoring_encoder(str(candidate), paths.embeddings, config.evaluation, config.training.device, config.training.trust_remote_code,
                                  trained_top_layers=config.training.trainable_top_layers)
        _, per_query, _ = score_encoder(encoder, plan.dev_subsets, plan.dev_fingerprint, candidate / ".dev_scores", config.evaluation.batch_size)
        means = scope_means(paired_comparison(base_per_query, per_query))
        curve.append({"alpha": alpha, "means": means})
        context.log.info(f"merge alpha {alpha:g}: dev gains " + ", ".join(f"{scope} {v['gain']:+.4f}" for scope, v in means.items()))
    alpha, reason = choose_alpha(curve)
    context.log.info(f"merge: {reason}")
    with atomic_directory(paths.checkpoint(scale)) as tmp:
        shutil.copytree(work / f"alpha-{alpha:g}", tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".dev_scores"))
        card = tmp / "README.md"
        if card.exists():
            card.write_text(card.read_text(encoding="utf-8") + f"\n\nWeights averaged with the base model: {reason}.\n", encoding="utf-8")
    write_json({"alpha": alpha, "reason": reason, "curve": curve}, work / "merge.json")
    table = merge_curve_table(curve)
    return {
        "merge_alpha": alpha,
        "merge_rule": reason,
        "merge_alpha_curve": MetadataValue.md(table),
        "merge_alpha_plot": MetadataValue.md(png_markdown(merge_curve_png(curve), "dev gain over the base by merge alpha")),
    }


def _train_with_torchrun(context: AssetExecutionContext, settings: RetrofitSettings, scale: str) -> MaterializeResult:
    config = settings.pipeline()
    _teacher_targets(context, config, read_training_data(settings.paths(), scale))
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
