"""hard_negatives: mined with the base encoder over the mixture's passage pool."""

import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...artifact_io import write_json, write_parquet
from ...encoder import encode_texts, load_encoder
from ...indexing import gpu_available
from ...mining import attach_negatives, mine_negatives
from ..partitions import data_scale_partitions
from ..resources import RetrofitSettings
from .data import training_mixture


@asset(group_name="training", kinds={"faiss", "parquet"}, partitions_def=data_scale_partitions, deps=[training_mixture])
def hard_negatives(context: AssetExecutionContext, settings: RetrofitSettings) -> MaterializeResult:
    """k negatives per query from a rank window of the base encoder's FAISS ranking, with
    candidates scoring above max_relative_score x the positive's score dropped as likely false
    negatives. strategy bm25 / random / none give the paper's negatives ablation."""
    config, paths = settings.pipeline(), settings.paths()
    scale = context.partition_key
    mixture = pd.read_parquet(paths.mixture(scale))
    mining = config.negatives
    started = time.perf_counter()
    encoders = {}
    if mining.strategy == "dense":
        model = load_encoder(config.base_model, device=config.training.device, max_length=config.training.max_passage_length,
                             trust_remote_code=config.training.trust_remote_code)
        batch = config.encode_batch_size
        encoders = {
            "encode_queries": lambda texts: encode_texts(model, texts, config.training.query_prefix, batch, config.training.max_query_length,
                                                         description="encode queries"),
            "encode_pool": lambda texts, out: encode_texts(model, texts, config.training.passage_prefix, batch, config.training.max_passage_length,
                                                           out=out, description="encode passage pool"),
        }
    negatives, ranks, report = mine_negatives(
        mixture["query"].tolist(), mixture["positive"].tolist(), mining,
        work_dir=paths.mining_work(scale), use_gpu=gpu_available(), **encoders,
    )
    result = attach_negatives(mixture, negatives, ranks)
    write_parquet(result, paths.negatives(scale))
    write_json(report.as_dict(), paths.negatives(scale).with_suffix(".report.json"))
    rank_values = [r for row in ranks for r in row if r >= 0]
    context.log.info(f"mining report: {report.as_dict()}")
    return MaterializeResult(metadata={
        "rows": len(result),
        "strategy": mining.strategy,
        "negatives_per_query": mining.num_negatives,
        "pool_size": report.pool_size,
        "mean_negative_rank": MetadataValue.float(float(np.mean(rank_values)) if rank_values else float("nan")),
        "share_filtered_as_false_negatives": MetadataValue.float(report.false_negative_share),
        "queries_padded_with_random": report.queries_padded_with_random,
        "rank_window": f"[{mining.range_min}, {mining.range_max})",
        "max_relative_score": mining.max_relative_score,
        "seconds": round(time.perf_counter() - started, 1),
        "path": MetadataValue.path(str(paths.negatives(scale))),
    })
