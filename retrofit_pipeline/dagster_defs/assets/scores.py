"""base_model_scores, retrieval_scores (per partition), the data-scale report and promotion."""

import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...artifact_io import atomic_path, write_json, write_parquet, write_text
from ...encoder import encode_texts, load_encoder
from ...evaluation import evaluate_model, ndcg_from_rankings
from ...indexing import load_index
from ...mixing import overlaps_evaluation_exactly
from ...model_card import replace_scores_section
from ...promotion import Candidate, decide, promote, read_current
from ...reporting import data_scale_plot_png, png_markdown, score_table_markdown
from ..partitions import data_scale_partitions
from ..resources import RetrofitSettings
from .data import read_evaluation
from .index import faiss_index


def _score_metadata(scores: pd.DataFrame) -> dict:
    return {f"ndcg_at_10/{row.language}": MetadataValue.float(float(row.ndcg_at_10)) for row in scores.itertuples()}


@asset(group_name="evaluation", kinds={"mteb"}, deps=["evaluation_set"])
def base_model_scores(context: AssetExecutionContext, settings: RetrofitSettings) -> MaterializeResult:
    """The untrained base encoder on the held-out set: the start every partition's gain is measured from."""
    config, paths = settings.pipeline(), settings.paths()
    model = load_encoder(config.base_model, device=config.training.device, max_length=config.training.max_passage_length,
                         trust_remote_code=config.training.trust_remote_code,
                         query_prefix=config.training.query_prefix, passage_prefix=config.training.passage_prefix)
    started = time.perf_counter()
    scores = evaluate_model(model, read_evaluation(settings), paths.base_scores / "mteb", config.evaluation.batch_size,
                            config.evaluation.max_queries_per_language)
    write_parquet(scores, paths.base_scores / "scores.parquet")
    return MaterializeResult(metadata={
        "model": config.base_model,
        "mean_ndcg_at_10": MetadataValue.float(float(scores["ndcg_at_10"].mean())),
        "scores": MetadataValue.md(scores.to_markdown(index=False, floatfmt=".4f")),
        **_score_metadata(scores),
        "seconds": round(time.perf_counter() - started, 1),
        "path": MetadataValue.path(str(paths.base_scores)),
    })


def faiss_ndcg_by_language(model, evaluation, config, index_dir) -> dict[str, float]:
    """nDCG@10 of the partition's FAISS index itself (queries embedded by the checkpoint), per language."""
    index, doc_ids, languages = load_index(index_dir)
    queries = evaluation.queries
    embeddings = encode_texts(model, queries["text"].tolist(), config.training.query_prefix, config.encode_batch_size,
                              config.training.max_query_length, description="encode evaluation queries")
    doc_languages = np.asarray(languages)
    depth = min(index.ntotal, 1000)
    scores, ids = index.search(embeddings, depth)
    result = {}
    for language in evaluation.languages:
        rankings = {}
        for row in np.flatnonzero(queries["language"].to_numpy() == language):
            keep = [(doc_ids[i], float(s)) for i, s in zip(ids[row], scores[row]) if i >= 0 and doc_languages[i] == language][:10]
            rankings[queries["query_id"].iloc[row]] = dict(keep)
        result[language] = ndcg_from_rankings(rankings, evaluation.qrels)
    return result


@asset(group_name="evaluation", kinds={"mteb"}, partitions_def=data_scale_partitions, deps=[faiss_index, base_model_scores])
def retrieval_scores(context: AssetExecutionContext, settings: RetrofitSettings) -> MaterializeResult:
    """nDCG@10 and recall@100 per language through mteb for the partition's checkpoint, next to the
    base model; also the nDCG@10 of the FAISS index, and the model card updated with the scores."""
    config, paths = settings.pipeline(), settings.paths()
    scale = context.partition_key
    evaluation = read_evaluation(settings)
    model = load_encoder(str(paths.checkpoint(scale)), device=config.training.device, max_length=config.training.max_passage_length)
    started = time.perf_counter()
    scores = evaluate_model(model, evaluation, paths.scores(scale) / "mteb", config.evaluation.batch_size,
                            config.evaluation.max_queries_per_language)
    faiss_scores = faiss_ndcg_by_language(model, evaluation, config, paths.index(scale))
    scores["faiss_ndcg_at_10_all_queries"] = scores["language"].map(faiss_scores)
    base = pd.read_parquet(paths.base_scores / "scores.parquet")
    table = score_table_markdown(base, scores)
    write_parquet(scores, paths.scores(scale) / "scores.parquet")
    write_text(table + "\n", paths.scores(scale) / "score_table.md")
    card_path = paths.checkpoint(scale) / "README.md"
    if card_path.exists():
        write_text(replace_scores_section(card_path.read_text(encoding="utf-8"), table), card_path)
    context.log.info("\n" + table)
    return MaterializeResult(metadata={
        "mean_ndcg_at_10": MetadataValue.float(float(scores["ndcg_at_10"].mean())),
        "mean_gain_over_base": MetadataValue.float(float(scores["ndcg_at_10"].mean() - base["ndcg_at_10"].mean())),
        "score_table": MetadataValue.md(table),
        "all_metrics": MetadataValue.md(scores.to_markdown(index=False, floatfmt=".4f")),
        **_score_metadata(scores),
        "seconds": round(time.perf_counter() - started, 1),
        "path": MetadataValue.path(str(paths.scores(scale))),
    })


@asset(group_name="evaluation", kinds={"matplotlib"}, deps=[retrieval_scores, base_model_scores])
def data_scale_report(context: AssetExecutionContext, settings: RetrofitSettings) -> MaterializeResult:
    """The data-scale curve over every partition scored so far (a backfill fills it in)."""
    config, paths = settings.pipeline(), settings.paths()
    rows = []
    for scale, size in config.data_scales.items():
        score_file = paths.scores(scale) / "scores.parquet"
        if score_file.exists():
            scores = pd.read_parquet(score_file)
            rows.extend({"scale": scale, "scale_rows": size, "language": r.language, "ndcg_at_10": r.ndcg_at_10} for r in scores.itertuples())
            rows.append({"scale": scale, "scale_rows": size, "language": "mean", "ndcg_at_10": float(scores["ndcg_at_10"].mean())})
    if not rows:
        raise ValueError("no partition has retrieval_scores yet: materialize retrieval_scores for at least one data scale")
    curve = pd.DataFrame(rows)
    base = pd.read_parquet(paths.base_scores / "scores.parquet")
    png = data_scale_plot_png(curve, float(base["ndcg_at_10"].mean()))
    with atomic_path(paths.report / "data_scale.png") as tmp:
        tmp.write_bytes(png)
    write_parquet(curve, paths.report / "data_scale.parquet")
    pivot = curve.pivot(index="language", columns="scale", values="ndcg_at_10")
    pivot.insert(0, "base", base.set_index("language")["ndcg_at_10"].reindex(pivot.index))
    pivot.loc["mean", "base"] = float(base["ndcg_at_10"].mean())
    write_json({"experiment": config.name, "curve": rows}, paths.report / "data_scale.json")
    return MaterializeResult(metadata={
        "scales_scored": MetadataValue.json(sorted(curve["scale"].unique().tolist())),
        "table": MetadataValue.md(pivot.to_markdown(floatfmt=".4f")),
        "plot": MetadataValue.md(png_markdown(png, "data-scale curve")),
        "path": MetadataValue.path(str(paths.report)),
    })


@asset(group_name="evaluation", kinds={"pytorch"}, deps=[retrieval_scores, "training_mixture", "evaluation_set"])
def promoted_checkpoint(context: AssetExecutionContext, settings: RetrofitSettings) -> MaterializeResult:
    """The checkpoint to serve: the best scored one, promoted only if its training data does not
    overlap the evaluation set and its mean nDCG@10 is not below the current one's."""
    config, paths = settings.pipeline(), settings.paths()
    evaluation = read_evaluation(settings)
    candidates = []
    for scale in config.data_scales:
        score_file = paths.scores(scale) / "scores.parquet"
        if score_file.exists() and paths.checkpoint(scale).exists() and paths.mixture(scale).exists():
            leaked = int(overlaps_evaluation_exactly(pd.read_parquet(paths.mixture(scale)), evaluation).sum())
            candidates.append(Candidate(scale, paths.checkpoint(scale), float(pd.read_parquet(score_file)["ndcg_at_10"].mean()), leaked))
    decision = decide(candidates, read_current(paths.promoted))
    if decision.promoted:
        promote(decision.candidate, paths.promoted)
    context.log.info(f"promotion: {'promoted' if decision.promoted else 'kept current'}: {decision.reason}")
    current = read_current(paths.promoted)
    return MaterializeResult(metadata={
        "promoted": decision.promoted,
        "reason": decision.reason,
        "current_scale": current["scale"] if current else "none",
        "current_mean_ndcg_at_10": MetadataValue.float(float(current["mean_ndcg_at_10"])) if current else MetadataValue.float(float("nan")),
        "candidates": MetadataValue.json([{"scale": c.scale, "mean_ndcg_at_10": round(c.mean_ndcg_at_10, 4), "leaked_rows": c.leaked_rows} for c in candidates]),
        "path": MetadataValue.path(str(paths.promoted)),
    })
