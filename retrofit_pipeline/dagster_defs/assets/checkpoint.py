"""encoder_checkpoint: contrastive fine-tuning of the base encoder on the mined data."""

import json
from dataclasses import asdict

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...model_card import render_model_card
from ...reporting import loss_curve_png, png_markdown
from ...training import train_encoder
from ..partitions import data_scale_partitions
from ..resources import RetrofitSettings
from .negatives import hard_negatives


@asset(group_name="training", kinds={"pytorch", "huggingface"}, partitions_def=data_scale_partitions, deps=[hard_negatives])
def encoder_checkpoint(context: AssetExecutionContext, settings: RetrofitSettings) -> MaterializeResult:
    """InfoNCE over in-batch + hard negatives; bf16 and gradient checkpointing on GPU; saved as a
    sentence-transformers checkpoint (safetensors) with a model card. Resumes from its last saved step."""
    config, paths = settings.pipeline(), settings.paths()
    scale = context.partition_key
    data = pd.read_parquet(paths.negatives(scale))
    data["negatives"] = data["negatives"].map(list)
    log_every = max(1, len(data) // config.training.batch_size // 20)

    def on_progress(step: int, total: int, loss: float) -> None:
        if step % log_every == 0 or step == total:
            context.log.info(f"step {step}/{total} loss {loss:.4f}")

    result = train_encoder(
        config.base_model, data, config.training, paths.checkpoint(scale), paths.training_work(scale),
        model_card=lambda r: render_model_card(config, scale, data, r, scores=None),
        on_progress=on_progress,
    )
    summary = result.summary()
    if result.resumed_from_step:
        context.log.info(f"resumed from step {result.resumed_from_step}")
    return MaterializeResult(metadata={
        **{k: v for k, v in summary.items() if v is not None},
        "training_rows": len(data),
        "loss_curve": MetadataValue.md(png_markdown(loss_curve_png(result.losses), "training loss")),
        "settings": MetadataValue.json(json.loads(json.dumps(asdict(config.training)))),
        "path": MetadataValue.path(str(paths.checkpoint(scale))),
    })
