"""The training step as its own program, for torchrun: `torchrun --nproc_per_node N -m
retrofit_pipeline.distributed_training --config preset.yaml --scale 2k`.

The encoder_checkpoint asset starts it through Dagster Pipes when the preset says
`training.launcher: torchrun`; rank 0 then streams progress to the Dagster run and reports the
materialization's metadata. It also runs by hand (no Dagster), e.g. on a cluster node."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from dataclasses import asdict

import pandas as pd

from .config import load_config
from .model_card import render_model_card
from .paths import ArtifactPaths
from .reporting import loss_curve_png, png_markdown
from .schema import validate_training_rows
from .teacher import distillation_targets
from .trainer import train_encoder
from .training import TrainingResult


def torchrun_command(config, scale: str, device: str, python: str = sys.executable, node_rank: int | None = None) -> list[str]:
    """The torchrun command that trains `scale` under `config`: one node (--standalone) or, with
    training.nnodes > 1, this node's share of a c10d rendezvous at training.rdzv_endpoint (every
    node runs the same command; ranks are assigned by the rendezvous unless node_rank is given)."""
    training = config.training
    if training.nnodes > 1:
        launch = [f"--nnodes={training.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={training.rdzv_endpoint}",
                  f"--rdzv-id={training.rdzv_id}"] + ([f"--node-rank={node_rank}"] if node_rank is not None else [])
    else:
        launch = ["--standalone"]
    return [python, "-m", "torch.distributed.run", *launch, f"--nproc-per-node={training.nproc_per_node}",
            "-m", "retrofit_pipeline.distributed_training", "--config", str(config.source_file), "--scale", scale, "--device", device]


def checkpoint_metadata(config, data: pd.DataFrame, result: TrainingResult, path: str, teacher: dict | None = None) -> dict:
    """The encoder_checkpoint asset's metadata, in Dagster Pipes' form ({"raw_value", "type"});
    `teacher` is TeacherTargets.metadata when the recipe distils from a teacher."""
    summary = {k: v for k, v in result.summary().items() if v is not None}
    return {
        **summary,
        **({"distillation_teacher": {"raw_value": teacher, "type": "json"}} if teacher else {}),
        "training_rows": len(data),
        "loss_curve": {"raw_value": png_markdown(loss_curve_png(result.losses), "training loss"), "type": "md"},
        "settings": {"raw_value": json.loads(json.dumps(asdict(config.training))), "type": "json"},
        "path": {"raw_value": path, "type": "path"},
    }


def progress_logger(log_info, rows: int, batch_size: int):
    """An on_progress callback for train_encoder that logs about 20 times per run."""
    every = max(1, rows // batch_size // 20)

    def on_progress(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            log_info(f"step {step}/{total} loss {loss:.4f}")

    return on_progress


def read_training_data(paths: ArtifactPaths, scale: str) -> pd.DataFrame:
    source = paths.negatives(scale)
    return validate_training_rows(pd.read_parquet(source), str(source))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    import os

    config = load_config(args.config)
    config.training.device = args.device
    paths = ArtifactPaths(config.experiment_dir)
    data = read_training_data(paths, args.scale)
    is_main = int(os.environ.get("RANK", "0")) == 0
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    reports_to_dagster = is_main and DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ  # launched by the asset
    with (open_dagster_pipes() if reports_to_dagster else nullcontext()) as pipes:
        on_progress = progress_logger(pipes.log.info, len(data), config.training.batch_size) if pipes is not None else None
        # The asset filled the teacher's store before launching: every rank reads it, none encodes.
        targets = distillation_targets(config, data, device="cpu")
        result = train_encoder(
            config.base_model, data, config.training, paths.checkpoint(args.scale), paths.training_work(args.scale),
            model_card=lambda r: render_model_card(config, args.scale, data, r, scores=None), on_progress=on_progress,
            teacher_targets=targets,
        )
        if pipes is not None:
            if result.resumed_from_step:
                pipes.log.info(f"resumed from step {result.resumed_from_step}")
            pipes.report_asset_materialization(metadata=checkpoint_metadata(config, data, result, str(paths.checkpoint(args.scale)),
                                                                            targets.metadata if targets else None))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
