"""base_model_scores, dev_scores and retrieval_scores (per partition), the data-scale report and promotion."""

import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...artifact_io import atomic_path, read_json, write_json, write_parquet, write_text
from ...comparison import comparison_markdown, paired_comparison, scope_means, scores_markdown
from ...embedding_store import model_identity
from ...evaluation import ndcg_from_rankings
from ...evaluation_scopes import IN_DOMAIN, scored_languages
from ...indexing import load_index
from ...mixing import evaluation_leakage
from ...model_card import replace_scores_section
from ...promotion import (Candidate, TrainedOnEvaluation, decide, own_training_pairs, promote, read_current, stored_current_scores,
                          stored_training_pairs)
from ...reporting import data_scale_plot_png, data_scale_table, plateau_scale, png_markdown
from ...scoring import check_comparable, check_prompts, model_folder, read_scores, score_encoder, score_model_dir, scoring_encoder
from ...scoring_encoder import ScoringEncoder
from ..evaluation_plan import evaluation_plan, training_prompts
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL


def _score_metadata(scores: pd.DataFrame) -> dict:
    return {f"score/{row.scope}/{row.domain}/{row.language}": MetadataValue.float(float(row.main_score)) for row in scores.itertuples()}


def _scope_metadata(means: dict) -> dict:
    metadata = {}
    for scope, values in means.items():
        metadata[f"mean/{scope}"] = MetadataValue.float(values["retrofitted"])
        metadata[f"gain/{scope}"] = MetadataValue.float(values["gain"])
        metadata[f"gain_95ci/{scope}"] = f"[{values['ci_low']:+.4f}, {values['ci_high']:+.4f}]"
    return metadata


def _plan_metadata(plan) -> dict:
    """What the scored and dev sets are made of: queries left out for want of a translation, and
    how many relevant documents a pooled / cross-lingual query has."""
    metadata = {f"dropped_without_translation/{scope}": count for scope, count in plan.dropped.items()}
    metadata.update({f"dev_dropped_without_translation/{scope}": count for scope, count in plan.dev_dropped.items()})
    relevance = plan.relevance()
    if not relevance.empty:
        metadata["relevant_documents_per_query"] = MetadataValue.md(relevance.to_markdown(index=False))
    return metadata


def index_problem(index_dir, identity: str, fingerprint: str) -> str | None:
    """Why the FAISS index in `index_dir` does not belong to the model `identity` and the evaluation
    `fingerprint` (so its vectors would be another model's or another corpus'), or None."""
    info_path = index_dir / "info.json"
    if not info_path.exists():
        return f"{index_dir} has no index: materialize faiss_index"
    info = read_json(info_path)
    if info.get("model_identity") != identity:
        return (f"the index in {index_dir} was built from a checkpoint with identity {info.get('model_identity')}, the checkpoint is now "
                f"{identity} (retrained?): re-materialize faiss_index")
    if info.get("evaluation_fingerprint") != fingerprint:
        return (f"the index in {index_dir} was built on evaluation set {info.get('evaluation_fingerprint')}, the evaluation set is now "
                f"{fingerprint}: re-materialize faiss_index")
    return None


def faiss_ndcg_by_subset(encoder: ScoringEncoder, subsets, index_dir) -> dict[str, float]:
    """nDCG@10 of the partition's FAISS index itself on the in-domain subsets (queries embedded by
    the same encoder), searching only each subset's documents: the index serves what was scored."""
    index, doc_ids, doc_subsets = load_index(index_dir)
    doc_subsets = np.asarray(doc_subsets)
    prompt = encoder.prompts.get("query", "")
    result = {}
    for subset in subsets:
        if subset.scope != IN_DOMAIN:
            continue
        embeddings = encoder.embed(subset.queries["text"].tolist(), prompt)
        scores, ids = index.search(embeddings, min(index.ntotal, 1000))
        rankings = {}
        for row, query_id in enumerate(subset.queries["query_id"]):
            keep = [(doc_ids[i], float(s)) for i, s in zip(ids[row], scores[row]) if i >= 0 and doc_subsets[i] == subset.name][:10]
            rankings[query_id] = dict(keep)
        result[subset.name] = ndcg_from_rankings(rankings, subset.qrels)
    return result


def build(exp: Experiment) -> list:
    """base_model_scores, retrieval_scores, data_scale_report and promoted_checkpoint of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"mteb"}, deps=exp.keys("evaluation_set"),
           code_version=exp.code_version("base_model_scores"), pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def base_model_scores(context: AssetExecutionContext) -> MaterializeResult:
        """The untrained base encoder on every scope (in-domain, held-out task, out-of-domain,
        pooled, cross-lingual, bitext), per domain and language, and on the dev split when the merge
        step needs it: the start every partition's gain is measured from. Scored as a user loads
        it, at its own length, with the prompts the recipe trains with."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        plan = evaluation_plan(settings)
        base_dir = model_folder(config.base_model)
        prompts = training_prompts(config)
        started = time.perf_counter()
        encoder = scoring_encoder(base_dir, paths.embeddings, config.evaluation, config.training.device,
                                  config.training.trust_remote_code, prompts, config.training.trainable_top_layers)
        scores, _, summary = score_encoder(encoder, plan.subsets, plan.fingerprint, paths.base_scores, config.evaluation.batch_size)
        if plan.dev_subsets:  # what dev_scores, the merge step and the sweep choose on
            score_encoder(encoder, plan.dev_subsets, plan.dev_fingerprint, paths.base_scores / "dev", config.evaluation.batch_size)
        context.log.info(f"{summary['texts_encoded']} texts encoded, {summary['texts_served_from_store']} served from the embedding store")
        return MaterializeResult(metadata={
            "model": config.base_model,
            "model_identity": summary["model_identity"],
            "max_length": summary["max_length"],
            **{f"mean/{scope}": MetadataValue.float(value) for scope, value in summary["mean_score"].items()},
            "scopes": MetadataValue.md(plan.summary().to_markdown(index=False)),
            "dev_scopes": MetadataValue.md(plan.dev_summary().to_markdown(index=False)),
            **_plan_metadata(plan),
            "scored_languages": MetadataValue.json(scored_languages(plan.subsets)),
            "scores": MetadataValue.md(scores_markdown(scores)),
            "evaluation_fingerprint": summary["evaluation_fingerprint"],
            **_score_metadata(scores),
            "texts_encoded": summary["texts_encoded"],
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.base_scores)),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"mteb"}, partitions_def=exp.partitions,
           deps=[*exp.keys("faiss_index"), base_model_scores, *exp.keys("encoder_checkpoint", "evaluation_set")],
           code_version=exp.code_version("retrieval_scores"), pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def retrieval_scores(context: AssetExecutionContext) -> MaterializeResult:
        """The partition's checkpoint on every scope through mteb, next to the base model, with
        paired bootstrap intervals of every gain and of each scope's mean; the FAISS index's own
        nDCG@10 in-domain (the index must be this checkpoint's, on this evaluation set); the model
        card updated."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        plan = evaluation_plan(settings)
        checkpoint = str(paths.checkpoint(scale))
        problem = index_problem(paths.index(scale), model_identity(checkpoint), plan.fingerprint)
        if problem:
            raise ValueError(problem)
        started = time.perf_counter()
        base_per_query, base_summary = read_scores(paths.base_scores, plan.fingerprint, "base_model_scores")
        check_prompts(base_summary, training_prompts(config), "base_model_scores")
        encoder = scoring_encoder(checkpoint, paths.embeddings, config.evaluation, config.training.device, config.training.trust_remote_code,
                                  trained_top_layers=config.training.trainable_top_layers)
        scores, per_query, summary = score_encoder(encoder, plan.subsets, plan.fingerprint, paths.scores(scale), config.evaluation.batch_size)
        check_comparable(base_summary, summary)
        faiss_scores = faiss_ndcg_by_subset(encoder, plan.subsets, paths.index(scale))
        scores["faiss_ndcg_at_10"] = [faiss_scores.get(f"{d}.{lang}") if scope == IN_DOMAIN else None
                                      for scope, d, lang in zip(scores["scope"], scores["domain"], scores["language"])]
        write_parquet(scores, paths.scores(scale) / "scores.parquet")
        comparison = paired_comparison(base_per_query, per_query)
        means = scope_means(comparison)
        write_parquet(comparison, paths.scores(scale) / "comparison.parquet")
        write_json({**summary, "comparison": means}, paths.scores(scale) / "summary.json")
        table = comparison_markdown(comparison)
        overview = comparison_markdown(comparison, means_only=True)
        write_text(overview + "\n\n" + table + "\n", paths.scores(scale) / "score_table.md")
        card_path = paths.checkpoint(scale) / "README.md"
        if card_path.exists():
            write_text(replace_scores_section(card_path.read_text(encoding="utf-8"), overview + "\n\n" + table), card_path)
        context.log.info("\n" + overview)
        return MaterializeResult(metadata={
            **_scope_metadata(means),
            "scopes": MetadataValue.md(overview),
            "score_table": MetadataValue.md(table),
            "all_metrics": MetadataValue.md(scores.to_markdown(index=False, floatfmt=".4f")),
            **_score_metadata(scores),
            "scored_languages": len(scored_languages(plan.subsets)),
            "evaluation_fingerprint": summary["evaluation_fingerprint"],
            "model_identity": summary["model_identity"],
            "max_length": summary["max_length"],
            "texts_served_from_store": summary["texts_served_from_store"],
            "texts_encoded": summary["texts_encoded"],
            "texts_from_shared_layers": summary["texts_from_shared_layers"],
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(paths.scores(scale))),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"mteb"}, partitions_def=exp.partitions,
           deps=[base_model_scores, *exp.keys("encoder_checkpoint", "evaluation_set")],
           code_version=exp.code_version("dev_scores"), pool=ACCELERATOR_POOL, required_resource_keys={exp.resource_key})
    def dev_scores(context: AssetExecutionContext) -> MaterializeResult:
        """The partition's checkpoint on the dev split (every scope, on identities disjoint from the
        scored ones), paired against the base's dev scores: what recipes and knobs are chosen on
        (scripts/recipe_sweep.py ranks variants here), so the scored scopes are read only to report."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        plan = evaluation_plan(settings)
        if not plan.dev_subsets:
            raise ValueError("evaluation.dev_fraction selects no dev queries of this evaluation set: set it above 0 to choose on dev")
        started = time.perf_counter()
        base_per_query, base_summary = read_scores(paths.base_scores / "dev", plan.dev_fingerprint, "base_model_scores (dev split)")
        check_prompts(base_summary, training_prompts(config), "base_model_scores (dev split)")
        encoder = scoring_encoder(str(paths.checkpoint(scale)), paths.embeddings, config.evaluation, config.training.device,
                                  config.training.trust_remote_code, trained_top_layers=config.training.trainable_top_layers)
        results = paths.scores(scale) / "dev"
        _, per_query, summary = score_encoder(encoder, plan.dev_subsets, plan.dev_fingerprint, results, config.evaluation.batch_size)
        check_comparable(base_summary, summary)
        comparison = paired_comparison(base_per_query, per_query)
        means = scope_means(comparison)
        write_parquet(comparison, results / "comparison.parquet")
        write_json({**summary, "comparison": means}, results / "summary.json")
        overview = comparison_markdown(comparison, means_only=True)
        write_text(overview + "\n\n" + comparison_markdown(comparison) + "\n", results / "score_table.md")
        context.log.info("dev split:\n" + overview)
        return MaterializeResult(metadata={
            **_scope_metadata(means),
            "scopes": MetadataValue.md(overview),
            "dev_fingerprint": plan.dev_fingerprint,
            "model_identity": summary["model_identity"],
            "texts_encoded": summary["texts_encoded"],
            "seconds": round(time.perf_counter() - started, 1),
            "path": MetadataValue.path(str(results)),
        })

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"matplotlib"}, deps=[retrieval_scores, base_model_scores],
           code_version=exp.code_version("data_scale_report"), required_resource_keys={exp.resource_key})
    def data_scale_report(context: AssetExecutionContext) -> MaterializeResult:
        """The data-scale curve over every partition scored so far (a backfill fills it in): each
        scope's mean with its interval, per subset, and where the in-domain curve plateaus."""
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
        """The checkpoint to serve (rules in promotion.py): clean (leakage checked on the pairs its
        weights were trained on), its in-domain gain over the base above zero with 95 % confidence,
        no scope where a loss beyond the forgetting margin is not ruled out, no scope below the
        current model beyond the promotion tolerance, and scored on these very weights."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        plan = evaluation_plan(settings)
        candidates = []
        for scale in config.data_scales:
            summary_file = paths.scores(scale) / "summary.json"
            if not (summary_file.exists() and paths.checkpoint(scale).exists() and paths.mixture(scale).exists()):
                continue
            summary = read_json(summary_file)
            if summary.get("evaluation_fingerprint") != plan.fingerprint or "comparison" not in summary:
                context.log.warning(f"{scale}: scored on another evaluation set; re-materialize its retrieval_scores to make it a candidate")
                continue
            identity = model_identity(paths.checkpoint(scale))
            if summary.get("model_identity") != identity:
                context.log.warning(f"{scale}: its scores are of other weights (identity {summary.get('model_identity')}, the checkpoint "
                                    f"is now {identity}); re-materialize its faiss_index and retrieval_scores to make it a candidate")
                continue
            pairs = own_training_pairs(paths.checkpoint(scale), pd.read_parquet(paths.mixture(scale)))
            if pairs is None:  # leakage must be checked on the weights' own data, not on today's mixture
                context.log.warning(f"{scale}: its training mixture is not the one its checkpoint was trained on (training_pairs_fingerprint "
                                    "of training_log.json); re-materialize its encoder_checkpoint to make it a candidate")
                continue
            exact, near = evaluation_leakage(pairs, plan.scored, config.mixture.near_duplicate_threshold, config.mixture.seed)
            candidates.append(Candidate(scale, paths.checkpoint(scale), identity, plan.fingerprint, summary["comparison"],
                                        pd.read_parquet(paths.scores(scale) / "per_query.parquet"), int((exact | near).sum()), pairs))

        def current_scores(fingerprint: str) -> pd.DataFrame:
            if (read_current(paths.promoted) or {}).get("evaluation_fingerprint") == fingerprint:
                return stored_current_scores(paths.promoted)
            # Re-scoring on a changed evaluation set: never on documents the current weights were trained on.
            own_pairs = stored_training_pairs(paths.promoted)
            if own_pairs is None:
                raise TrainedOnEvaluation("its own training pairs are not stored with it (or do not match its training log), so "
                                          "its leakage into the new evaluation set cannot be checked")
            exact, near = evaluation_leakage(own_pairs, plan.scored, config.mixture.near_duplicate_threshold, config.mixture.seed)
            if (exact | near).any():
                raise TrainedOnEvaluation(f"{int((exact | near).sum())} of its own training pairs are in the new evaluation set "
                                          f"(e.g. {own_pairs['pair_id'][exact | near].iloc[0]}): its scores there would be inflated")
            context.log.info("the current model was scored on another evaluation set: re-scoring it on this one")
            _, per_query, _ = score_model_dir(str(paths.promoted / "model"), plan.subsets, plan.fingerprint, paths.promoted / "rescored",
                                              paths.embeddings, config.evaluation, config.training.device,
                                              trained_top_layers=config.training.trainable_top_layers)
            return per_query

        decision = decide(candidates, read_current(paths.promoted), current_scores, config.evaluation.forgetting_margin,
                          config.evaluation.promotion_tolerance)
        if decision.promoted:
            promote(decision.candidate, paths.promoted)
        context.log.info(f"promotion: {'promoted' if decision.promoted else 'kept current'}: {decision.reason}")
        current = read_current(paths.promoted)
        return MaterializeResult(metadata={
            "promoted": decision.promoted,
            "reason": decision.reason,
            "current_scale": current["scale"] if current else "none",
            "current_model_identity": current["model_identity"] if current else "none",
            "candidates": MetadataValue.json([{"scale": c.scale, "model_identity": c.model_identity, "leaked_rows": c.leaked_rows,
                                               **{scope: round(v["gain"], 4) for scope, v in c.means.items()}} for c in candidates]),
            "against_current": MetadataValue.json(decision.against_current or {}),
            "rules": (f"in-domain gain interval above zero; on every other scope the gain interval's lower end above "
                      f"-{config.evaluation.forgetting_margin} (non-inferiority); no scope below the current model by more than "
                      f"{config.evaluation.promotion_tolerance}; never re-scored on its own training data"),
            "evaluation_fingerprint": plan.fingerprint,
            "path": MetadataValue.path(str(paths.promoted)),
        })

    return [base_model_scores, retrieval_scores, dev_scores, data_scale_report, promoted_checkpoint]
