"""Asset checks: the guarantees a retrofitted model is promoted on."""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from ..comparison import IN_DOMAIN, scope_means
from ..embedding_store import model_identity
from ..indexing import load_index
from ..mixing import evaluation_leakage
from ..promotion import forgetting_problems, in_domain_problems
from .assets.scores import index_problem
from .evaluation_plan import evaluation_plan, read_evaluation
from .experiment import Experiment
from .resources import RetrofitSettings


def _comparison(settings: RetrofitSettings, scale: str) -> pd.DataFrame:
    return pd.read_parquet(settings.paths().scores(scale) / "comparison.parquet")


def build(exp: Experiment) -> list:
    """The checks of one experiment's assets."""

    @asset_check(asset=exp.key("training_mixture"), blocking=True, required_resource_keys={exp.resource_key},
                 description="No training query or positive is an evaluation query or a passage judged relevant for one, "
                             "exactly after normalization or as a MinHash near-duplicate (the cleaning's own definition), "
                             "and no row comes from a held-out domain or is of a held-out task type.")
    def no_train_eval_overlap(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        mixture = pd.read_parquet(paths.mixture(context.partition_key))
        exact, near = evaluation_leakage(mixture, read_evaluation(settings), config.mixture.near_duplicate_threshold, config.mixture.seed)
        held_out = mixture["domain"].isin(config.evaluation.held_out_domains).to_numpy()
        held_out_task = mixture["task_type"].isin(config.evaluation.held_out_tasks).to_numpy()
        leaked = mixture[exact | near | held_out | held_out_task]
        return AssetCheckResult(passed=leaked.empty, metadata={
            "overlapping_rows_exact": int(exact.sum()), "overlapping_rows_near": int(near.sum()),
            "rows_from_held_out_domains": int(held_out.sum()), "rows_of_held_out_tasks": int(held_out_task.sum()),
            "examples": leaked["pair_id"].head(5).tolist(),
        })

    @asset_check(asset=exp.key("hard_negatives"), blocking=True, required_resource_keys={exp.resource_key},
                 description="No mined negative is a correct passage of the row: its positive, another positive of its query "
                             "(same query_id) or a passage of the positive's document in any language (same identity: a translation).")
    def negatives_differ_from_positive(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        frame = pd.read_parquet(settings.paths().negatives(context.partition_key))
        own = sum(positive in set(negatives) for positive, negatives in zip(frame["positive"], frame["negatives"]))
        correct = sum(bool(set(others) & set(negatives)) for others, negatives in zip(frame["other_positives"], frame["negatives"]))
        return AssetCheckResult(passed=own == 0 and correct == 0, metadata={
            "rows_with_positive_as_negative": int(own), "rows_with_same_query_or_document_passage_as_negative": int(correct)})

    @asset_check(asset=exp.key("faiss_index"), blocking=True, required_resource_keys={exp.resource_key},
                 description="The index belongs to the partition's checkpoint as it is now (content identity) and to the "
                             "evaluation set as it is now (fingerprint), and holds exactly one vector per evaluation document.")
    def index_covers_corpus(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        paths = settings.paths()
        plan = evaluation_plan(settings)
        index_dir = paths.index(context.partition_key)
        problem = index_problem(index_dir, model_identity(paths.checkpoint(context.partition_key)), plan.fingerprint)
        index, doc_ids, _ = load_index(index_dir)
        corpus = plan.scored.corpus
        covers = index.ntotal == len(corpus) and doc_ids == corpus["doc_id"].tolist()
        return AssetCheckResult(passed=problem is None and covers, metadata={
            "vectors": int(index.ntotal), "documents": len(corpus), "belongs_to_checkpoint_and_evaluation": problem or "yes"})

    @asset_check(asset=exp.key("retrieval_scores"), required_resource_keys={exp.resource_key},
                 description="Every scope and subset of the evaluation plan has a score, every configured evaluation "
                             "language is scored, and every score is in [0, 1].")
    def scores_for_every_language(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        config = settings.pipeline()
        scores = pd.read_parquet(settings.paths().scores(context.partition_key) / "scores.parquet")
        plan = evaluation_plan(settings)
        expected = {(s.scope, s.domain, s.language) for s in plan.subsets}
        missing = sorted("/".join(key) for key in expected - set(zip(scores["scope"], scores["domain"], scores["language"])))
        missing += sorted(f"*.{lang}" for lang in set(config.evaluation.languages or []) - set(scores["language"]))
        in_range = bool(scores["main_score"].between(0, 1).all())
        return AssetCheckResult(passed=not missing and in_range, metadata={
            "missing_subsets": missing, "values_in_range": in_range, "scored_languages": int(scores["language"].nunique())})

    @asset_check(asset=exp.key("retrieval_scores"), required_resource_keys={exp.resource_key},
                 description="In-domain, the retrofitted model beats the base model: the paired bootstrap 95 % interval "
                             "of the mean gain lies above zero. Subsets that regress are listed.")
    def retrofitted_beats_base_in_domain(context: AssetCheckExecutionContext) -> AssetCheckResult:
        comparison = _comparison(exp.settings(context), context.partition_key)
        means = scope_means(comparison)
        problems = in_domain_problems(means)
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR, metadata={
            **_scope_metadata(comparison, IN_DOMAIN), "problems": problems})

    @asset_check(asset=exp.key("retrieval_scores"), blocking=True, required_resource_keys={exp.resource_key},
                 description="Forgetting (non-inferiority): on every scope besides in-domain (held-out task, out-of-domain, "
                             "pooled, cross-lingual, bitext), the lower end of the mean gain's paired 95 % interval is above "
                             "-evaluation.forgetting_margin; an evaluation with no such scope fails (nothing measures forgetting).")
    def no_forgetting(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        comparison = _comparison(settings, context.partition_key)
        means = scope_means(comparison)
        problems = forgetting_problems(means, settings.pipeline().evaluation.forgetting_margin)
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR, metadata={
            "problems": problems, "forgetting_margin": settings.pipeline().evaluation.forgetting_margin,
            **{f"gain/{scope}": float(values["gain"]) for scope, values in means.items() if scope != IN_DOMAIN},
            **{f"gain_95ci/{scope}": f"[{values['ci_low']:+.4f}, {values['ci_high']:+.4f}]" for scope, values in means.items() if scope != IN_DOMAIN},
        })

    return [no_train_eval_overlap, negatives_differ_from_positive, index_covers_corpus, scores_for_every_language,
            retrofitted_beats_base_in_domain, no_forgetting]


def _scope_metadata(comparison: pd.DataFrame, scope: str) -> dict:
    rows = comparison[comparison["scope"] == scope]
    if rows.empty:
        return {}
    mean = rows[rows["domain"] == "mean"].iloc[0]
    subsets = rows[rows["domain"] != "mean"]
    return {"mean_gain": float(mean["gain"]), "gain_95ci": f"[{mean['ci_low']:+.4f}, {mean['ci_high']:+.4f}]",
            "base": float(mean["base"]), "retrofitted": float(mean["retrofitted"]),
            "regressed_subsets": {f"{r.domain}.{r.language}": round(float(r.gain), 4) for r in subsets.itertuples() if r.gain < 0}}
