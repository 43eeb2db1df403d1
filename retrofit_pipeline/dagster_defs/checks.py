"""Asset checks: the guarantees a retrofitted model is promoted on."""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from ..comparison import IN_DOMAIN, OUT_OF_DOMAIN
from ..mixing import evaluation_leakage
from ..indexing import load_index
from .assets.data import read_evaluation, scored_evaluation
from .experiment import Experiment
from .resources import RetrofitSettings


def _comparison(settings: RetrofitSettings, scale: str) -> pd.DataFrame:
    return pd.read_parquet(settings.paths().scores(scale) / "comparison.parquet")


def build(exp: Experiment) -> list:
    """The checks of one experiment's assets."""

    @asset_check(asset=exp.key("training_mixture"), blocking=True, required_resource_keys={exp.resource_key},
                 description="No training query or positive is an evaluation query or a passage judged relevant for one, "
                             "exactly after normalization or as a MinHash near-duplicate (the cleaning's own definition), "
                             "and no row comes from a held-out domain.")
    def no_train_eval_overlap(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        mixture = pd.read_parquet(paths.mixture(context.partition_key))
        exact, near = evaluation_leakage(mixture, read_evaluation(settings), config.mixture.near_duplicate_threshold, config.mixture.seed)
        held_out = mixture["domain"].isin(config.evaluation.held_out_domains).to_numpy()
        leaked = mixture[exact | near | held_out]
        return AssetCheckResult(passed=leaked.empty, metadata={
            "overlapping_rows_exact": int(exact.sum()), "overlapping_rows_near": int(near.sum()),
            "rows_from_held_out_domains": int(held_out.sum()), "examples": leaked["pair_id"].head(5).tolist(),
        })

    @asset_check(asset=exp.key("hard_negatives"), blocking=True, required_resource_keys={exp.resource_key},
                 description="No mined negative is a positive of the same query (its own or another row's of its query_id).")
    def negatives_differ_from_positive(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        frame = pd.read_parquet(settings.paths().negatives(context.partition_key))
        own = sum(positive in set(negatives) for positive, negatives in zip(frame["positive"], frame["negatives"]))
        same_query = sum(bool(set(others) & set(negatives)) for others, negatives in zip(frame["other_positives"], frame["negatives"]))
        return AssetCheckResult(passed=own == 0 and same_query == 0, metadata={
            "rows_with_positive_as_negative": int(own), "rows_with_same_query_positive_as_negative": int(same_query)})

    @asset_check(asset=exp.key("faiss_index"), required_resource_keys={exp.resource_key},
                 description="The index holds exactly one vector per evaluation document.")
    def index_covers_corpus(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        index, doc_ids, _ = load_index(settings.paths().index(context.partition_key))
        corpus = scored_evaluation(settings).corpus
        passed = index.ntotal == len(corpus) and doc_ids == corpus["doc_id"].tolist()
        return AssetCheckResult(passed=passed, metadata={"vectors": int(index.ntotal), "documents": len(corpus)})

    @asset_check(asset=exp.key("retrieval_scores"), required_resource_keys={exp.resource_key},
                 description="nDCG@10 and recall@100 are present and in [0, 1] for every evaluation subset "
                             "(domain and language) and every configured evaluation language.")
    def scores_for_every_language(context: AssetCheckExecutionContext) -> AssetCheckResult:
        settings = exp.settings(context)
        config = settings.pipeline()
        scores = pd.read_parquet(settings.paths().scores(context.partition_key) / "scores.parquet")
        queries = read_evaluation(settings).queries
        expected = set(zip(queries["domain"], queries["language"]))
        missing = sorted(f"{d}.{lang}" for d, lang in expected - set(zip(scores["domain"], scores["language"])))
        missing += sorted(f"*.{lang}" for lang in set(config.evaluation.languages or []) - set(scores["language"]))
        in_range = bool(scores[["ndcg_at_10", "recall_at_100"]].apply(lambda c: c.between(0, 1)).all().all())
        return AssetCheckResult(passed=not missing and in_range, metadata={"missing_subsets": missing, "values_in_range": in_range})

    @asset_check(asset=exp.key("retrieval_scores"), required_resource_keys={exp.resource_key},
                 description="In-domain, the retrofitted model is not below the base model (mean nDCG@10); "
                             "subsets that regress are listed.")
    def retrofitted_not_below_base(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return _scope_check(_comparison(exp.settings(context), context.partition_key), IN_DOMAIN)

    @asset_check(asset=exp.key("retrieval_scores"), required_resource_keys={exp.resource_key},
                 description="Forgetting: out-of-domain (domains the training never saw), the retrofitted "
                             "model is not below the base model (mean nDCG@10).")
    def no_forgetting_out_of_domain(context: AssetCheckExecutionContext) -> AssetCheckResult:
        comparison = _comparison(exp.settings(context), context.partition_key)
        if OUT_OF_DOMAIN not in set(comparison["scope"]):
            return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN,
                                    metadata={"note": "no out-of-domain evaluation: set evaluation.held_out_domains to measure forgetting"})
        return _scope_check(comparison, OUT_OF_DOMAIN)


    return [no_train_eval_overlap, negatives_differ_from_positive, index_covers_corpus, scores_for_every_language,
            retrofitted_not_below_base, no_forgetting_out_of_domain]


def _scope_check(comparison: pd.DataFrame, scope: str) -> AssetCheckResult:
    rows = comparison[comparison["scope"] == scope]
    mean = rows[rows["domain"] == "mean"].iloc[0]
    subsets = rows[rows["domain"] != "mean"]
    regressed = {f"{r.domain}.{r.language}": round(float(r.gain), 4) for r in subsets.itertuples() if r.gain < 0}
    passed = bool(mean["retrofitted"] >= mean["base"])
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR if not passed else AssetCheckSeverity.WARN,
        metadata={"mean_gain": float(mean["gain"]), "gain_95ci": f"[{mean['ci_low']:+.4f}, {mean['ci_high']:+.4f}]",
                  "base": float(mean["base"]), "retrofitted": float(mean["retrofitted"]), "regressed_subsets": regressed},
    )
