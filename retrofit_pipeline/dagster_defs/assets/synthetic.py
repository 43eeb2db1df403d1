"""synthetic_queries: LLM-generated queries for the experiment's passages (retrofit_pipeline/synthetic/),
upstream of training_pool. Built only for a preset with `synthetic: {enabled: true}`: the default
preset's asset graph does not have it."""

import time

import pandas as pd
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from ...artifact_io import write_json, write_parquet
from ...schema import PAIR_COLUMNS
from ...synthetic.engine import synthesize
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL
from .data import content_hash


def _table(records: list[dict]) -> str:
    if not records:
        return "(none)"
    frame = pd.DataFrame(records)
    frame["query"] = frame["query"].str.slice(0, 90)
    return frame.to_markdown(index=False)


def build(exp: Experiment) -> list:
    """synthetic_queries of one experiment (nothing when its preset does not enable generation)."""
    if not exp.config.synthetic.enabled:
        return []

    @asset(key_prefix=exp.prefix, group_name=exp.group("data"), kinds={"pandas", "parquet"}, deps=exp.keys("raw_corpora"),
           code_version=exp.code_version("synthetic_queries"), pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def synthetic_queries(context: AssetExecutionContext) -> MaterializeResult:
        """Queries an LLM writes for the configured sources' training passages (a natural question, a
        keyword query, a question in another language), through any OpenAI-compatible endpoint,
        cached by content and server so nothing is asked twice, then filtered (length, copying the
        passage, language, round-trip consistency with the base encoder, duplicates). The kept ones are
        training pairs of task types synthetic_question / synthetic_keywords / synthetic_cross_lingual,
        which training_pool cleans and the mixture samples like any other."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        started = time.perf_counter()
        last_logged = [0.0]

        def progress(done: int, total: int) -> None:
            if time.perf_counter() - last_logged[0] > 30 or done == total:
                last_logged[0] = time.perf_counter()
                context.log.info(f"generated {done}/{total} uncached queries")

        raw = pd.read_parquet(paths.raw_pairs)
        result = synthesize(config, raw, paths.synthetic_cache, device=config.training.device, progress=progress)
        write_json(result.report, paths.synthetic_pairs.with_suffix(".report.json"))
        write_parquet(result.queries, paths.synthetic_pairs.with_name("synthetic_queries_all.parquet"))
        write_parquet(result.pairs if not result.pairs.empty else pd.DataFrame(columns=PAIR_COLUMNS), paths.synthetic_pairs)
        report, generation, filters = result.report, result.report["generation"], result.report["filters"]
        if generation["budget_hit"]:
            context.log.warning(f"the budget was spent (max_requests {config.synthetic.max_requests}, max_total_tokens "
                                f"{config.synthetic.max_total_tokens}): {generation['skipped_budget']} queries not asked; a rerun asks only those")
        if generation["not_cached"] or generation["cached_by_several_servers"]:
            context.log.warning(f"no base_url, cached replies only: skipped {generation['not_cached']} queries without a cached reply "
                                f"and {generation['cached_by_several_servers']} cached from several servers (synthetic.cached_server chooses one)")
        if result.pairs.empty:
            context.log.warning("no generated query passed the filters: training_pool gets no synthetic pairs")
        context.log.info(f"synthetic queries: {filters['generated']} generated, {filters['kept']} kept, dropped {filters['dropped']}")
        return MaterializeResult(data_version=DataVersion(content_hash(result.pairs)), metadata={
            "pairs": len(result.pairs),
            "model": str(config.synthetic.model),
            "base_url": str(config.synthetic.base_url),
            "server": str(generation["server"] or "none: cached replies only"),  # the model the server reports, @ base_url
            "replies_by_server": MetadataValue.json(generation["replies_by_server"]),
            "prompts": MetadataValue.json(report["prompts"]),
            "passages_available": report["passages"]["available"],
            "passages_selected": MetadataValue.json(report["passages"]["selected_by_language"]),
            "queries_asked_for": report["items"],
            "cache_hits": generation["cache_hits"],
            "new_replies": generation["generated"],
            "requests": generation["requests"],
            "retries": generation["retries"],
            "prompt_tokens": generation["prompt_tokens"],
            "completion_tokens": generation["completion_tokens"],
            "malformed_replies": generation["malformed"],
            "failed_requests": generation["failed"],
            "budget_hit": generation["budget_hit"],
            "not_asked_budget": generation["skipped_budget"],
            "not_cached": generation["not_cached"],  # no base_url: skipped for want of a cached reply
            "cached_by_several_servers": generation["cached_by_several_servers"],  # no base_url: skipped, see synthetic.cached_server
            "generated": filters["generated"],
            "kept": filters["kept"],
            "dropped_by_filter": MetadataValue.json(filters["dropped"]),
            **{f"dropped_{name}": count for name, count in filters["dropped"].items()},
            "language_unverified": filters["language_unverified"],
            "round_trip": MetadataValue.json(filters["round_trip"]),
            "kept_by_task_type": MetadataValue.json(filters["kept_by_task_type"]),
            "examples": MetadataValue.md(_table(report["examples"])),
            "problems": MetadataValue.json(generation["problems"]),
            "generation_seconds": generation["seconds"],
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.synthetic_pairs)),
        })

    return [synthetic_queries]
