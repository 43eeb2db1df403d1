"""raw_corpora + evaluation_set (one loading pass) and training_mixture."""

import hashlib
import time

import pandas as pd
from dagster import AssetExecutionContext, AssetSpec, DataVersion, MaterializeResult, MetadataValue, asset, multi_asset

from ...artifact_io import write_json, write_parquet
from ...mixing import clean_pool, mixture_summary, sample_mixture
from ...sources import load_raw_sources, restrict_evaluation
from ..evaluation_plan import read_evaluation
from ..experiment import Experiment


def content_hash(*frames: pd.DataFrame) -> str:
    """A data version: changes exactly when the rows change (a refresh with the same data keeps it)."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).values.tobytes())
    return digest.hexdigest()[:16]


def _counts_table(frame: pd.DataFrame, rows: str, columns: str) -> str:
    return pd.crosstab(frame[rows], frame[columns], margins=True).to_markdown()


def build(exp: Experiment) -> list:
    """raw_corpora + evaluation_set and training_mixture of one experiment."""

    @multi_asset(
        name=exp.named("raw_corpora_and_evaluation_set"), required_resource_keys={exp.resource_key},
        specs=[
            AssetSpec(exp.key("raw_corpora"), group_name=exp.group("data"), kinds={"pandas", "parquet"},
                      code_version=exp.code_version("raw_corpora"),
                      description="Every configured raw source in the standard schema (query, positive, language, task type, source)."),
            AssetSpec(exp.key("evaluation_set"), group_name=exp.group("data"), kinds={"pandas", "parquet"},
                      code_version=exp.code_version("raw_corpora"),
                      description="The held-out retrieval set (corpus, queries, qrels per language) every model is scored on; "
                                  "held out by construction (whole pages, in every language) and by the leakage filter."),
        ]
    )
    def raw_corpora_and_evaluation_set(context: AssetExecutionContext):
        """One pass over the sources yields both the training pool and its held-out evaluation split."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        started = time.perf_counter()
        pairs, evaluation, stats = load_raw_sources(config.raw_sources, config.evaluation.sources, paths.cache, config.incoming_dir)
        evaluation = restrict_evaluation(evaluation, config.evaluation.languages, config.evaluation.domains)
        write_parquet(pairs, paths.raw_pairs)
        for part in ("corpus", "queries", "qrels"):
            write_parquet(getattr(evaluation, part), paths.evaluation / f"{part}.parquet")
        context.log.info(f"{len(pairs)} pairs in {pairs['language'].nunique()} languages; evaluation: {len(evaluation.queries)} queries")
        yield MaterializeResult(asset_key=exp.key("raw_corpora"), data_version=DataVersion(content_hash(pairs)), metadata={
            "rows": len(pairs),
            "languages": MetadataValue.json(sorted(pairs["language"].unique().tolist())),
            "rows_by_language_and_task": MetadataValue.md(_counts_table(pairs, "language", "task_type")),
            "sources": MetadataValue.json(stats),
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.raw_pairs)),
        })
        per_language = evaluation.queries.groupby("language").size().rename("queries").to_frame().join(
            evaluation.corpus.groupby("language").size().rename("documents"))
        yield MaterializeResult(asset_key=exp.key("evaluation_set"), data_version=DataVersion(
            content_hash(evaluation.corpus, evaluation.queries, evaluation.qrels)), metadata={
            "queries": len(evaluation.queries),
            "documents": len(evaluation.corpus),
            "languages": MetadataValue.json(evaluation.languages),
            "per_language": MetadataValue.md(per_language.to_markdown()),
            "path": MetadataValue.path(str(paths.evaluation)),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("data"), kinds={"pandas", "parquet"},  # + the LLM's pairs, when configured
           deps=exp.keys("raw_corpora", "evaluation_set") + (exp.keys("synthetic_queries") if exp.config.synthetic.enabled else []),
           code_version=exp.code_version("training_pool"), required_resource_keys={exp.resource_key})
    def training_pool(context: AssetExecutionContext) -> MaterializeResult:
        """Every raw pair training may use: the held-out (out-of-domain) domains and task types removed, exact and
        near-duplicates removed, and every pair that leaks an evaluation query or a passage judged
        relevant for one removed. Computed once per raw-data version; every data scale samples from it."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        started = time.perf_counter()
        raw, synthetic_rows = pd.read_parquet(paths.raw_pairs), 0
        if config.synthetic.enabled:
            from ...synthetic.engine import with_synthetic_pairs

            raw, synthetic_rows = with_synthetic_pairs(raw, paths.synthetic_pairs)
        cleaned, report = clean_pool(raw, read_evaluation(settings), config.mixture.near_duplicate_threshold,
                                     config.mixture.seed, config.evaluation.held_out_domains, config.evaluation.held_out_tasks)
        write_parquet(cleaned, paths.training_pool)
        write_json(report.as_dict(), paths.training_pool.with_suffix(".cleaning.json"))
        context.log.info(f"cleaning: {report.as_dict()}")
        return MaterializeResult(metadata={
            "rows": len(cleaned),
            "held_out_domains": MetadataValue.json(list(config.evaluation.held_out_domains)),
            "rows_by_domain": MetadataValue.json(cleaned.groupby("domain").size().to_dict()),
            "rows_by_language_and_task": MetadataValue.md(_counts_table(cleaned, "language", "task_type")),
            "dropped_held_out_domain": report.held_out_domain_rows,
            "dropped_held_out_task": report.held_out_task_rows,
            "dropped_exact_duplicates": report.exact_duplicates,
            "dropped_near_duplicates": report.near_duplicates,
            "dropped_eval_overlap_exact": report.eval_overlap_exact,
            "dropped_eval_overlap_near": report.eval_overlap_near,
            **({"synthetic_pairs_in": synthetic_rows, "synthetic_pairs_kept": int((cleaned["source"] == "synthetic-queries").sum())}
               if config.synthetic.enabled else {}),
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.training_pool)),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("data"), kinds={"pandas", "parquet"}, partitions_def=exp.partitions, deps=[training_pool],
           code_version=exp.code_version("training_mixture"), required_resource_keys={exp.resource_key})
    def training_mixture(context: AssetExecutionContext) -> MaterializeResult:
        """A training set of the partition's size, sampled from the cleaned training pool by the
        configured mixture policy."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        cleaned = pd.read_parquet(paths.training_pool)
        size = config.pairs_for_scale(scale)
        if size > len(cleaned):
            context.log.warning(f"scale {scale} asks for {size} pairs but only {len(cleaned)} remain after cleaning; using all")
        mixture = sample_mixture(cleaned, size, config.mixture.policy, config.mixture.seed)
        write_parquet(mixture, paths.mixture(scale))
        summary = mixture_summary(mixture)
        return MaterializeResult(metadata={
            "rows": summary["rows"],
            "policy": config.mixture.policy,
            "rows_by_task": MetadataValue.json(summary["by_task"]),
            "rows_by_language": MetadataValue.json(summary["by_language"]),
            "rows_by_domain": MetadataValue.json(summary["by_domain"]),
            "distinct_queries": int(mixture["query_id"].nunique()),
            "rows_by_language_and_task": MetadataValue.md(_counts_table(mixture, "language", "task_type")),
            "path": MetadataValue.path(str(paths.mixture(scale))),
        })

    return [raw_corpora_and_evaluation_set, training_pool, training_mixture]
