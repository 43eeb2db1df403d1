"""Comparing two models scored on the same queries: per-subset gains with paired bootstrap
intervals, and the mean of every scope a user decides on (in-domain, held-out task, out-of-domain,
pooled, cross-lingual, bitext; see evaluation_scopes.py).

Both models' per-query scores (nDCG@10; a sentence's share of F1 for bitext mining) are paired by
query. A scope's mean weighs queries, not subsets: it is the mean over all its queries, i.e. each
(domain, language) subset weighs by its number of queries, so a 1-query subset counts as one query
and not as much as a 120-query one. Each bootstrap resample draws the queries of every subset with
replacement, independently per subset (stratified), and recomputes each subset's mean difference
and the query-weighted mean of the scope. The interval is the percentile interval of those
resampled differences: if it excludes zero, the difference is not query-sampling noise (it says
nothing about seed-to-seed training noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .evaluation_scopes import BITEXT, IN_DOMAIN, OUT_OF_DOMAIN, SCOPES  # noqa: F401  (re-exported scope names)

SUBSET = ["scope", "domain", "language"]


def metric_of(scope: str) -> str:
    return "F1" if scope == BITEXT else "nDCG@10"


def paired_comparison(base: pd.DataFrame, tuned: pd.DataFrame, resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 13) -> pd.DataFrame:
    """`base` and `tuned`: per-query rows (scope, domain, language, query_id, score) on the same
    queries. Returns one row per subset and one "mean" row per scope: scope, domain, language,
    queries, base, retrofitted, gain, ci_low, ci_high."""
    merged = base.merge(tuned, on=SUBSET + ["query_id"], suffixes=("_base", "_tuned"), how="outer", indicator=True)
    unpaired = merged[merged["_merge"] != "both"]
    if not unpaired.empty:
        example = unpaired.iloc[0]
        raise ValueError(f"the two score sets are not on the same queries: {len(unpaired)} unpaired, e.g. "
                         f"{example['scope']}/{example['domain']}/{example['language']}/{example['query_id']}; "
                         "re-score both on one evaluation set")
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    rows, resampled_by_scope = [], {}
    for (scope, domain, language), group in merged.groupby(SUBSET, sort=True):
        difference = (group["score_tuned"] - group["score_base"]).to_numpy()
        draws = difference[rng.integers(0, len(difference), size=(resamples, len(difference)))].mean(axis=1)
        resampled_by_scope.setdefault(scope, []).append((len(difference), draws))
        rows.append({
            "scope": scope, "domain": domain, "language": language, "queries": len(group),
            "base": group["score_base"].mean(), "retrofitted": group["score_tuned"].mean(), "gain": difference.mean(),
            "ci_low": np.quantile(draws, alpha), "ci_high": np.quantile(draws, 1 - alpha),
        })
    table = pd.DataFrame(rows)
    for scope, sized_draws in resampled_by_scope.items():
        subsets = table[table["scope"] == scope]
        sizes = np.array([size for size, _ in sized_draws], dtype=float)
        mean_draws = np.average(np.stack([draws for _, draws in sized_draws]), axis=0, weights=sizes)  # per resample, weighing queries
        weights = subsets["queries"].to_numpy(dtype=float)
        rows.append({
            "scope": scope, "domain": "mean", "language": "mean", "queries": int(subsets["queries"].sum()),
            "base": np.average(subsets["base"], weights=weights), "retrofitted": np.average(subsets["retrofitted"], weights=weights),
            "gain": np.average(subsets["gain"], weights=weights),
            "ci_low": np.quantile(mean_draws, alpha), "ci_high": np.quantile(mean_draws, 1 - alpha),
        })
    order = {scope: i for i, scope in enumerate(SCOPES)}
    result = pd.DataFrame(rows)
    result["_order"] = result["scope"].map(lambda s: order.get(s, len(order))) * 2 + (result["domain"] == "mean")
    return result.sort_values(["_order", "domain", "language"]).drop(columns="_order").reset_index(drop=True)


def scope_means(comparison: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{scope: {base, retrofitted, gain, ci_low, ci_high, queries, languages}} from the "mean" rows."""
    means = comparison[comparison["domain"] == "mean"]
    languages = comparison[comparison["domain"] != "mean"].groupby("scope")["language"].nunique()
    return {row.scope: {**{k: float(getattr(row, k)) for k in ("base", "retrofitted", "gain", "ci_low", "ci_high")},
                        "queries": int(row.queries), "languages": int(languages.get(row.scope, 0))}
            for row in means.itertuples()}


SMALL_SUBSET = 20  # queries: a subset below this is shown in the caption with its share of its scope's mean


def means_caption(comparison: pd.DataFrame) -> str:
    """How the scope means are made, and how much of each rests on small subsets."""
    subsets = comparison[comparison["domain"] != "mean"]
    small = subsets[subsets["queries"] < SMALL_SUBSET].groupby("scope")["queries"].agg(["count", "sum"])
    total = subsets.groupby("scope")["queries"].sum()
    order = {scope: i for i, scope in enumerate(SCOPES)}
    parts = [f"{scope} {int(small.loc[scope, 'count'])} subsets, {int(small.loc[scope, 'sum'])} of {int(total[scope])} queries"
             for scope in sorted(small.index, key=lambda s: order.get(s, len(order)))]
    return ("Scope means weigh queries: each is the mean over all the scope's queries (a subset weighs by its number of "
            "queries; the interval resamples queries within each subset). "
            + (f"Subsets under {SMALL_SUBSET} queries: " + "; ".join(parts) + "." if parts else f"No subset has under {SMALL_SUBSET} queries."))


def comparison_markdown(comparison: pd.DataFrame, labels: tuple[str, str] = ("base", "retrofitted"), means_only: bool = False) -> str:
    """The score table users read: per subset and per scope mean, with the 95 % interval of the gain
    (the means-only table is followed by its caption, `means_caption`)."""
    table = comparison[comparison["domain"] == "mean"].copy() if means_only else comparison.copy()
    table.insert(1, "metric", table["scope"].map(metric_of))
    table["gain"] = [f"{gain:+.4f}" for gain in table["gain"]]
    table["95% CI of gain"] = [f"[{low:+.4f}, {high:+.4f}]" for low, high in zip(table["ci_low"], table["ci_high"])]
    table = table.drop(columns=["ci_low", "ci_high"]).rename(columns={"base": labels[0], "retrofitted": labels[1]})
    for column in labels:
        table[column] = [f"{value:.4f}" for value in table[column]]
    if means_only:
        languages = comparison[comparison["domain"] != "mean"].groupby("scope")["language"].nunique()
        table["language"] = [f"{languages.get(scope, 0)} languages" for scope in table["scope"]]
        table = table.drop(columns="domain").rename(columns={"language": "subsets"})
    else:
        table.loc[table["domain"] == "mean", ["domain", "language"]] = ["**mean**", ""]
    # disable_numparse: the cells are formatted already (tabulate would drop the "+" of a gain)
    markdown = table.to_markdown(index=False, disable_numparse=True)
    return markdown + "\n\n" + means_caption(comparison) if means_only else markdown


def scores_markdown(scores: pd.DataFrame) -> str:
    """One model's scores per scope and subset, with a mean per scope over its queries (the base model's table)."""
    table = scores[SUBSET + ["metric", "queries", "main_score"]].copy()
    weighted = table.assign(_weighted=table["main_score"] * table["queries"])
    means = weighted.groupby("scope", sort=False).agg(metric=("metric", "first"), queries=("queries", "sum"), _weighted=("_weighted", "sum")).reset_index()
    means = means.assign(main_score=means["_weighted"] / means["queries"]).drop(columns="_weighted")
    means = means.assign(domain="**mean**", language="")
    order = {scope: i for i, scope in enumerate(SCOPES)}
    table = pd.concat([table.assign(_last=0), means.assign(_last=1)])
    table = table.sort_values(["scope", "_last", "domain", "language"], key=lambda c: c.map(order) if c.name == "scope" else c)
    return table.drop(columns="_last").to_markdown(index=False, floatfmt=".4f")
