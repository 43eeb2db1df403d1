"""hard_negatives: mined with the base encoder (or negatives.teacher) over the mixture's passage pool."""

import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...artifact_io import write_json, write_parquet
from ...encoder import encode_texts, load_encoder
from ...indexing import gpu_available
from ...mining import (attach_negatives, extra_pool_passages, mine_negatives, other_positives_by_row, positive_translations,
                       same_document_counts)
from ...teacher import load_teacher
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL


def build(exp: Experiment) -> list:
    """hard_negatives of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("training"), kinds={"faiss", "parquet"}, partitions_def=exp.partitions,
           deps=exp.keys("training_mixture", "training_pool", "raw_corpora"), code_version=exp.code_version("hard_negatives"),
           pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def hard_negatives(context: AssetExecutionContext) -> MaterializeResult:
        """k negatives per query from a rank window [range_min, range_max) of the base encoder's (or
        the teacher's, with negatives.teacher) FAISS ranking over the passage pool (the mixture's positives, plus the training pool's passages of
        the same domains with `pool: raw`), every positive of the same query excluded, and candidates
        scoring too close to the positive dropped as likely false negatives (margins). strategy
        bm25 / random / none give the paper's negatives ablation."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        mixture = pd.read_parquet(paths.mixture(scale))
        training_pool = pd.read_parquet(paths.training_pool)
        mining = config.negatives
        # Every positive the query has in the raw data, also those the cleaning dropped (a near-duplicate
        # row can still leave its passage in the pool under another query).
        raw_pairs = pd.read_parquet(paths.raw_pairs, columns=["query_id", "positive", "identity"])
        other_positives = other_positives_by_row(mixture, raw_pairs)
        corpus = extra_pool_passages(mixture, training_pool, mining.pool_max_passages, mining.seed) if mining.pool == "raw" else None
        started = time.perf_counter()
        encoders, teacher = {}, None
        if mining.strategy == "dense" and mining.teacher and mining.mine_with == "teacher":
            # The teacher ranks the pool (its own prompts, its embeddings stored once for every partition).
            teacher = load_teacher(config)
            encoders = {"encode_queries": teacher.encode_queries, "encode_pool": teacher.encode_passages}
        elif mining.strategy == "dense":
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
            work_dir=paths.mining_work(scale), use_gpu=gpu_available(), corpus=corpus, other_positives=other_positives,
            given_negatives=mixture["given_negatives"].tolist() if "given_negatives" in mixture else None, **encoders,
        )
        if teacher is not None:
            teacher.save()
        translations = positive_translations(mixture, training_pool)
        result = attach_negatives(mixture, negatives, ranks, other_positives, translations)
        same_document = same_document_counts(mixture, raw_pairs, negatives)
        write_parquet(result, paths.negatives(scale))
        write_json(report.as_dict(), paths.negatives(scale).with_suffix(".report.json"))
        rank_values = [r for row in ranks for r in row if r >= 0]
        context.log.info(f"mining report: {report.as_dict()}")
        return MaterializeResult(metadata={
            "rows": len(result),
            "strategy": mining.strategy,
            # Whose embeddings ranked the pool: the margins and their baseline are on that model's scores.
            "mined_with": teacher.spec if teacher is not None else config.base_model,
            **({"teacher": MetadataValue.json(teacher.describe())} if teacher is not None else {}),
            "negatives_per_query": mining.num_negatives,
            "pool_size": report.pool_size,
            "mean_negative_rank": MetadataValue.float(float(np.mean(rank_values)) if rank_values else float("nan")),
            "share_filtered_as_false_negatives": MetadataValue.float(report.false_negative_share),
            "queries_padded_with_random": report.queries_padded_with_random,
            "queries_with_mined_negative": report.queries_with_mined_negative,
            "excluded_same_query_positives": report.excluded_same_query_positives,
            # Translations (and other passages) of the positive's document: excluded like same-query positives.
            "rows_with_same_document_passages": same_document["rows_with_same_document_passages"],
            "rows_with_same_document_negative": same_document["rows_with_same_document_negative"],
            "rows_with_positive_translations": sum(bool(texts) for texts in translations),
            "rank_window": f"[{mining.range_min}, {mining.range_max})",
            "false_negative_rule": MetadataValue.json({"relative_margin": mining.relative_margin, "absolute_margin": mining.absolute_margin,
                                                       "max_score": mining.max_score}),
            "score_percentiles": MetadataValue.json(report.extra),
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.negatives(scale))),
        })

    return [hard_negatives]
