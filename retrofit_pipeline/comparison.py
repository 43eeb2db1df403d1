"""Comparing two models scored on the same queries: per-subset gains with paired bootstrap
intervals, and the means a user decides on (in-domain, out-of-domain).

Both models' per-query nDCG@10 are paired by query; each bootstrap resample draws the queries of
every (domain, language) subset with replacement, independently per subset, and recomputes the
subset's mean difference and the mean over subsets. The interval is the percentile interval of
those resampled differences: if it excludes zero, the difference is not query-sampling noise
(it says nothing about seed-to-seed training noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd

IN_DOMAIN, OUT_OF_DOMAIN = "in-domain", "out-of-domain"
SUBSET = ["domain", "language"]


def scope_of(domain: str, held_out_domains) -> str:
    return OUT_OF_DOMAIN if domain in set(held_out_domains) else IN_DOMAIN


def paired_comparison(
    base: pd.DataFrame,
    tuned: pd.DataFrame,
    held_out_domains=(),
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 13,
) -> pd.DataFrame:
    """`base` and `tuned`: per-query rows (domain, language, query_id, ndcg_at_10) on the same
    queries. Returns one row per subset and one "mean" row per scope: scope, domain, language,
    queries, base, retrofitted, gain, ci_low, ci_high."""
    merged = base.merge(tuned, on=SUBSET + ["query_id"], suffixes=("_base", "_tuned"), how="outer", indicator=True)
    unpaired = merged[merged["_merge"] != "both"]
    if not unpaired.empty:
        example = unpaired.iloc[0]
        raise ValueError(f"the two score sets are not on the same queries: {len(unpaired)} unpaired, e.g. "
                         f"{example['domain']}/{example['language']}/{example['query_id']}; re-score both on one evaluation set")
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    rows, resampled_by_scope = [], {}
    for (domain, language), group in merged.groupby(SUBSET, sort=True):
        difference = (group["ndcg_at_10_tuned"] - group["ndcg_at_10_base"]).to_numpy()
        draws = difference[rng.integers(0, len(difference), size=(resamples, len(difference)))].mean(axis=1)
        scope = scope_of(domain, held_out_domains)
        resampled_by_scope.setdefault(scope, []).append(draws)
        rows.append({
            "scope": scope, "domain": domain, "language": language, "queries": len(group),
            "base": group["ndcg_at_10_base"].mean(), "retrofitted": group["ndcg_at_10_tuned"].mean(), "gain": difference.mean(),
            "ci_low": np.quantile(draws, alpha), "ci_high": np.quantile(draws, 1 - alpha),
        })
    table = pd.DataFrame(rows)
    for scope, draws in resampled_by_scope.items():
        subsets = table[table["scope"] == scope]
        mean_draws = np.mean(draws, axis=0)  # the mean over subsets, per resample
        rows.append({
            "scope": scope, "domain": "mean", "language": "mean", "queries": int(subsets["queries"].sum()),
            "base": subsets["base"].mean(), "retrofitted": subsets["retrofitted"].mean(), "gain": subsets["gain"].mean(),
            "ci_low": np.quantile(mean_draws, alpha), "ci_high": np.quantile(mean_draws, 1 - alpha),
        })
    order = {IN_DOMAIN: 0, OUT_OF_DOMAIN: 1}
    result = pd.DataFrame(rows)
    result["_order"] = result["scope"].map(order) * 2 + (result["domain"] == "mean")
    return result.sort_values(["_order", "domain", "language"]).drop(columns="_order").reset_index(drop=True)


def scope_means(comparison: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{scope: {base, retrofitted, gain, ci_low, ci_high}} from the "mean" rows."""
    means = comparison[comparison["domain"] == "mean"]
    return {row.scope: {k: float(getattr(row, k)) for k in ("base", "retrofitted", "gain", "ci_low", "ci_high")}
            for row in means.itertuples()}


def comparison_markdown(comparison: pd.DataFrame, labels: tuple[str, str] = ("base", "retrofitted")) -> str:
    """The score table users read: per subset and per scope mean, with the 95 % interval of the gain."""
    table = comparison.copy()
    table["95% CI of gain"] = [f"[{low:+.4f}, {high:+.4f}]" for low, high in zip(table["ci_low"], table["ci_high"])]
    table = table.drop(columns=["ci_low", "ci_high"]).rename(columns={"base": labels[0], "retrofitted": labels[1]})
    table.loc[table["domain"] == "mean", ["domain", "language"]] = ["**mean**", ""]
    return table.to_markdown(index=False, floatfmt=".4f")


def scores_markdown(scores: pd.DataFrame, held_out_domains=(), metric: str = "ndcg_at_10") -> str:
    """One model's scores per subset, with a mean per scope (the base model's table)."""
    table = scores[SUBSET + [metric]].copy()
    table.insert(0, "scope", [scope_of(d, held_out_domains) for d in table["domain"]])
    means = table.groupby("scope", sort=False)[metric].mean()
    table = pd.concat([table, pd.DataFrame([{"scope": s, "domain": "**mean**", "language": "", metric: v} for s, v in means.items()])])
    return table.sort_values(["scope", "domain"], key=lambda c: c.str.replace("**", "~", regex=False)).to_markdown(index=False, floatfmt=".4f")
