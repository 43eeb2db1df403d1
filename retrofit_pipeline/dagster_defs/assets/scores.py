"""base_model_scores, retrieval_scores (per partition), the data-scale report and promotion."""

import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...artifact_io import atomic_path, read_json, write_json, write_parquet, write_text
from ...comparison import OUT_OF_DOMAIN, IN_DOMAIN, comparison_markdown, paired_comparison, scope_means, scores_markdown
from ...encoder import encode_texts, load_encoder, serve_cached_embeddings
from ...evaluation import evaluate_model, evaluation_fingerprint, ndcg_from_rankings, subset_name
from ...indexing import load_embeddings, load_index
from ...mixing import evaluation_leakage
from ...model_card import replace_scores_section
from ...promotion import Candidate, decide, promote, read_current
from ...reporting import data_scale_plot_png, data_scale_table, plateau_scale, png_markdown
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL
from .data import scored_evaluation


def _score_metadata(scores: pd.DataFrame) -> dict:
    return {f"ndcg_at_10/{row.domain}/{row.language}": MetadataValue.float(float(row.ndcg_at_10)) for row in scores.itertuples()}


def score_model(model, evaluation, results_dir, config) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """mteb scores, per-query nDCG@10 and a summary (the evaluation set's fingerprint and the mean
    per scope) of one model, all written under `results_dir`."""
    scores, per_query = evaluate_model(model, evaluation, results_dir / "mteb", config.evaluation.batch_size)
    held_out = set(config.evaluation.held_out_domains)
    # Means over subsets of the per-query scores (unrounded, as the comparison computes them).
    subset_means = per_query.groupby(["domain", "language"])["ndcg_at_10"].mean().reset_index()
    scope = np.where(subset_means["domain"].isin(held_out), OUT_OF_DOMAIN, IN_DOMAIN)
    summary = {
        "evaluation_fingerprint": evaluation_fingerprint(evaluation),
        "mean_ndcg_at_10": {name: float(group["ndcg_at_10"].mean()) for name, group in subset_means.groupby(scope)},
    }
    write_parquet(scores, results_dir / "scores.parquet")
    write_parquet(per_query, results_dir / "per_query.parquet")
    write_json(summary, results_dir / "summary.json")
    return scores, per_query, summary


def faiss_ndcg_by_subset(embeddings: np.ndarray, evaluation, index_dir) -> dict[str, float]:
    """nDCG@10 of the partition's FAISS index itself (`embeddings`: the queries embedded by the
    checkpoint), per domain.language subset, searching only that subset's documents."""
    index, doc_ids, doc_subsets = load_index(index_dir)
    queries = evaluation.queries
    doc_subsets = np.asarray(doc_subsets)
    query_subsets = np.array([subset_name(d, lang) for d, lang in zip(queries["domain"], queries["language"])])
    depth = min(index.ntotal, 1000)
    scores, ids = index.search(embeddings, depth)
    result = {}
    for subset in sorted(set(query_subsets)):
        rankings = {}
        for row in np.flatnonzero(query_subsets == subset):
            keep = [(doc_ids[i], float(s)) for i, s in zip(ids[row], scores[row]) if i >= 0 and doc_subsets[i] == subset][:10]
            rankings[queries["query_id"].iloc[row]] = dict(keep)
        result[subset] = ndcg_from_rankings(rankings, evaluation.qrels)
    return result


def read_base_scores(paths, fingerprint: str) -> pd.DataFrame:
    """The base model's per-query scores, which must be on the same evaluation set."""
    summary = read_json(paths.base_scores / "summary.json")
    if summary["evaluation_fingerprint"] != fingerprint:
        raise ValueError(f"base_model_scores were computed on another evaluation set (fingerprint {summary['evaluation_fingerprint']}, "
                         f"now {fingerprint}): re-materialize base_model_scores first")
    return pd.read_parquet(paths.base_scores / "per_query.parquet")


def build(exp: Experiment) -> list:
    """base_model_scores, retrieval_scores, data_scale_report and promoted_checkpoint of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"mteb"}, deps=exp.keys("evaluation_set"),
           code_version=exp.code_version("base_model_scores"), pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def base_model_scores(context: AssetExecutionContext) -> MaterializeResult:
        """The untrained base encoder on the held-out set, in-domain and out-of-domain: the start every
        partition's gain is measured from."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        model = load_encoder(config.base_model, device=config.training.device, max_length=config.training.max_passage_length,
                             trust_remote_code=config.training.trust_remote_code,
                             query_prefix=config.training.query_prefix, passage_prefix=config.training.passage_prefix)
        started = time.perf_counter()
        scores, _, summary = score_model(model, scored_evaluation(settings), paths.base_scores, config)
        return MaterializeResult(metadata={
            "model": config.base_model,
            **{f"mean_ndcg_at_10/{scope}": MetadataValue.float(value) for scope, value in summary["mean_ndcg_at_10"].items()},
            "scores": MetadataValue.md(scores_markdown(scores, config.evaluation.held_out_domains)),
            "evaluation_fingerprint": summary["evaluation_fingerprint"],
            **_score_metadata(scores),
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.base_scores)),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"mteb"}, partitions_def=exp.partitions,
           deps=[*exp.keys("faiss_index"), base_model_scores, *exp.keys("encoder_checkpoint", "evaluation_set")],
           code_version=exp.code_version("retrieval_scores"), pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def retrieval_scores(context: AssetExecutionContext) -> MaterializeResult:
        """nDCG@10 and recall@100 per domain and language through mteb for the partition's checkpoint,
        next to the base model, with paired bootstrap intervals of every gain and of the in-domain and
        out-of-domain means; also the nDCG@10 of the FAISS index, and the model card updated."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        evaluation = scored_evaluation(settings)
        model = load_encoder(str(paths.checkpoint(scale)), device=config.training.device, max_length=config.training.max_passage_length)
        started = time.perf_counter()
        queries = evaluation.queries["text"].tolist()
        query_embeddings = encode_texts(model, queries, config.training.query_prefix, config.encode_batch_size,
                                        config.training.max_query_length, description="encode evaluation queries")
        # The index holds this checkpoint's embeddings of exactly this corpus, and the queries were just
        # embedded for it: mteb is served both instead of encoding them again (other texts are encoded as usual).
        reuse = serve_cached_embeddings(model, "document", evaluation.corpus["text"].tolist(), load_embeddings(paths.index(scale)),
                                        config.training.passage_prefix)
        serve_cached_embeddings(model, "query", queries, query_embeddings, config.training.query_prefix)
        scores, per_query, summary = score_model(model, evaluation, paths.scores(scale), config)
        context.log.info(f"corpus embeddings reused from the index: {reuse['served']}, encoded: {reuse['encoded']}")
        faiss_scores = faiss_ndcg_by_subset(query_embeddings, evaluation, paths.index(scale))
        scores["faiss_ndcg_at_10"] = [faiss_scores[subset_name(d, lang)] for d, lang in zip(scores["domain"], scores["language"])]
        write_parquet(scores, paths.scores(scale) / "scores.parquet")
        comparison = paired_comparison(read_base_scores(paths, summary["evaluation_fingerprint"]), per_query, config.evaluation.held_out_domains)
        means = scope_means(comparison)
        write_parquet(comparison, paths.scores(scale) / "comparison.parquet")
        write_json({**summary, "comparison": means}, paths.scores(scale) / "summary.json")
        table = comparison_markdown(comparison)
        write_text(table + "\n", paths.scores(scale) / "score_table.md")
        card_path = paths.checkpoint(scale) / "README.md"
        if card_path.exists():
            write_text(replace_scores_section(card_path.read_text(encoding="utf-8"), table), card_path)
        context.log.info("\n" + table)
        scope_metadata = {}
        for scope, values in means.items():
            scope_metadata[f"mean_ndcg_at_10/{scope}"] = MetadataValue.float(values["retrofitted"])
            scope_metadata[f"gain/{scope}"] = MetadataValue.float(values["gain"])
            scope_metadata[f"gain_95ci/{scope}"] = f"[{values['ci_low']:+.4f}, {values['ci_high']:+.4f}]"
        return MaterializeResult(metadata={
            **scope_metadata,
            "score_table": MetadataValue.md(table),
            "all_metrics": MetadataValue.md(scores.to_markdown(index=False, floatfmt=".4f")),
            **_score_metadata(scores),
            "evaluation_fingerprint": summary["evaluation_fingerprint"],
            "corpus_embeddings_reused_from_index": reuse["served"],
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.scores(scale))),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"matplotlib"}, deps=[retrieval_scores, base_model_scores],
           code_version=exp.code_version("data_scale_report"), required_resource_keys={exp.resource_key})
    def data_scale_report(context: AssetExecutionContext) -> MaterializeResult:
        """The data-scale curve over every partition scored so far (a backfill fills it in): in-domain
        and out-of-domain means with their intervals, per subset, and where the curve plateaus."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        rows = []
        for scale, size in config.data_scales.items():
            comparison_file = paths.scores(scale) / "comparison.parquet"
            if comparison_file.exists():
                comparison = pd.read_parquet(comparison_file)
                rows.extend({"scale": scale, "scale_rows": size, **r._asdict()} for r in comparison.itertuples(index=False))
        if not rows:
            raise ValueError("no partition has retrieval_scores yet: materialize retrieval_scores for at least one data scale")
        curve = pd.DataFrame(rows)
        means = curve[curve["domain"] == "mean"]
        plateau = plateau_scale(means[means["scope"] == IN_DOMAIN], config.evaluation.plateau_epsilon)
        png = data_scale_plot_png(means)
        with atomic_path(paths.report / "data_scale.png") as tmp:
            tmp.write_bytes(png)
        write_parquet(curve, paths.report / "data_scale.parquet")
        table = data_scale_table(curve)
        write_text(table + "\n", paths.report / "data_scale.md")
        write_json({"experiment": config.name, "plateau_scale": plateau, "plateau_epsilon": config.evaluation.plateau_epsilon,
                    "curve": means.to_dict(orient="records")}, paths.report / "data_scale.json")
        return MaterializeResult(metadata={
            "scales_scored": MetadataValue.json(sorted(curve["scale"].unique().tolist(), key=config.data_scales.get)),
            "plateau_scale": plateau or "not reached",
            "plateau_rule": f"first scale past which doubling the data gains less than {config.evaluation.plateau_epsilon} in-domain nDCG@10",
            "table": MetadataValue.md(table),
            "plot": MetadataValue.md(png_markdown(png, "data-scale curve")),
            "path": MetadataValue.path(str(paths.report)),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"pytorch"},
           deps=[retrieval_scores, *exp.keys("encoder_checkpoint", "training_mixture", "evaluation_set")],
           code_version=exp.code_version("promoted_checkpoint"), required_resource_keys={exp.resource_key})
    def promoted_checkpoint(context: AssetExecutionContext) -> MaterializeResult:
        """The checkpoint to serve: the best scored one, promoted only if its training data does not
        leak the evaluation set, it beats the base model in-domain without falling below it
        out-of-domain, and it is not below the current one on the same evaluation set (the current
        model is re-scored when the evaluation set changed)."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        evaluation = scored_evaluation(settings)
        fingerprint = evaluation_fingerprint(evaluation)
        candidates = []
        for scale in config.data_scales:
            summary_file = paths.scores(scale) / "summary.json"
            if not (summary_file.exists() and paths.checkpoint(scale).exists() and paths.mixture(scale).exists()):
                continue
            summary = read_json(summary_file)
            if summary["evaluation_fingerprint"] != fingerprint or "comparison" not in summary:
                context.log.warning(f"{scale}: scored on another evaluation set; re-materialize its retrieval_scores to make it a candidate")
                continue
            exact, near = evaluation_leakage(pd.read_parquet(paths.mixture(scale)), evaluation, config.mixture.near_duplicate_threshold,
                                             config.mixture.seed)
            means = summary["comparison"]
            candidates.append(Candidate(
                scale, paths.checkpoint(scale), means[IN_DOMAIN]["retrofitted"], int((exact | near).sum()), fingerprint,
                means[IN_DOMAIN]["base"],
                means[OUT_OF_DOMAIN]["retrofitted"] if OUT_OF_DOMAIN in means else None,
                means[OUT_OF_DOMAIN]["base"] if OUT_OF_DOMAIN in means else None,
            ))

        def rescore_current() -> float:
            model = load_encoder(str(paths.promoted / "model"), device=config.training.device, max_length=config.training.max_passage_length)
            _, _, summary = score_model(model, evaluation, paths.promoted / "rescored", config)
            return summary["mean_ndcg_at_10"][IN_DOMAIN]

        decision = decide(candidates, read_current(paths.promoted), rescore_current)
        if decision.promoted:
            promote(decision.candidate, paths.promoted)
        context.log.info(f"promotion: {'promoted' if decision.promoted else 'kept current'}: {decision.reason}")
        current = read_current(paths.promoted)
        return MaterializeResult(metadata={
            "promoted": decision.promoted,
            "reason": decision.reason,
            "current_scale": current["scale"] if current else "none",
            "current_mean_ndcg_at_10": MetadataValue.float(float(current["mean_ndcg_at_10"])) if current else MetadataValue.float(float("nan")),
            "candidates": MetadataValue.json([{"scale": c.scale, "in_domain": round(c.mean_ndcg_at_10, 4), "base": round(c.base_mean_ndcg_at_10, 4),
                                               "out_of_domain": c.out_of_domain_ndcg_at_10, "leaked_rows": c.leaked_rows} for c in candidates]),
            "evaluation_fingerprint": fingerprint,
            "path": MetadataValue.path(str(paths.promoted)),
        })

    return [base_model_scores, retrieval_scores, data_scale_report, promoted_checkpoint]
