"""official_mteb_scores: the partition's checkpoint and the base model on official mteb tasks by name."""

import time

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...artifact_io import write_parquet
from ...encoder import load_encoder
from ...official_benchmarks import evaluate_official, resolve_official_tasks
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL

# Official tasks are scored at the model's own maximum length (512 for BERT-style encoders), as the
# leaderboard does, not at the training length.
OFFICIAL_MAX_LENGTH = 512


def build(exp: Experiment) -> list:
    """official_mteb_scores of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"mteb"}, partitions_def=exp.partitions,
           deps=exp.keys("encoder_checkpoint"), code_version=exp.code_version("official_mteb_scores"), pool=ACCELERATOR_POOL,
           required_resource_keys={exp.resource_key})
    def official_mteb_scores(context: AssetExecutionContext) -> MaterializeResult:
        """evaluation.mteb_tasks / mteb_benchmark through mteb's own registry and evaluate call, for the
        base model and the partition's checkpoint, in mteb's result JSON (leaderboard-comparable). Does
        nothing when neither is configured."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        evaluation = config.evaluation
        if not evaluation.mteb_tasks and not evaluation.mteb_benchmark:
            return MaterializeResult(metadata={"skipped": "no evaluation.mteb_tasks or evaluation.mteb_benchmark configured"})
        scale = context.partition_key
        started = time.perf_counter()
        tables = {}
        for label, model_spec, directory in (("base", config.base_model, paths.base_scores / "official_mteb"),
                                             ("retrofitted", str(paths.checkpoint(scale)), paths.scores(scale) / "official_mteb")):
            tasks = resolve_official_tasks(evaluation.mteb_tasks, evaluation.mteb_benchmark, evaluation.mteb_languages,
                                           evaluation.mteb_retrieval_only)  # fresh task objects per run: mteb unloads them
            model = load_encoder(model_spec, device=config.training.device, max_length=OFFICIAL_MAX_LENGTH,
                                 trust_remote_code=config.training.trust_remote_code,
                                 query_prefix=config.training.query_prefix, passage_prefix=config.training.passage_prefix)
            name = f"retrofit/{config.name}-base" if label == "base" else f"retrofit/{config.name}-{scale}"
            tables[label] = evaluate_official(model, tasks, directory, evaluation.batch_size, evaluation.mteb_dataset_overrides, model_name=name)
            context.log.info(f"{label}: {len(tables[label])} official task subsets scored")
        keys = ["task", "subset", "split"]
        table = tables["base"][keys + ["ndcg_at_10"]].merge(
            tables["retrofitted"][keys + ["ndcg_at_10", "main_score_name", "revision_verified"]], on=keys, suffixes=("_base", "_retrofitted"))
        table["gain"] = table["ndcg_at_10_retrofitted"] - table["ndcg_at_10_base"]
        write_parquet(table, paths.scores(scale) / "official_mteb_scores.parquet")
        return MaterializeResult(metadata={
            "tasks": MetadataValue.json(sorted(table["task"].unique().tolist())),
            "mean_ndcg_at_10/base": MetadataValue.float(float(table["ndcg_at_10_base"].mean())),
            "mean_ndcg_at_10/retrofitted": MetadataValue.float(float(table["ndcg_at_10_retrofitted"].mean())),
            "table": MetadataValue.md(table.to_markdown(index=False, floatfmt=".4f")),
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.scores(scale) / "official_mteb")),
        })

    return [official_mteb_scores]
