"""The data-scale curve (plateau, table, plot) and the loss plot, as markdown and PNG."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd


def _new_figure(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")  # headless: assets run on servers and in CI
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=100)


def _png_bytes(figure) -> bytes:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def plateau_scale(means: pd.DataFrame, epsilon: float) -> str | None:
    """The first scale past which doubling the data gains less than `epsilon` nDCG@10: between
    consecutive scales, gain per doubling = (score difference) / log2(size ratio). None if every
    step still gains at least `epsilon` (no plateau within the scales measured)."""
    ordered = means.sort_values("scale_rows")
    sizes, scores, names = ordered["scale_rows"].to_numpy(), ordered["retrofitted"].to_numpy(), ordered["scale"].tolist()
    for i in range(len(ordered) - 1):
        per_doubling = (scores[i + 1] - scores[i]) / np.log2(sizes[i + 1] / sizes[i])
        if per_doubling < epsilon:
            return names[i]
    return None


def data_scale_table(curve: pd.DataFrame) -> str:
    """Scales as columns, subsets and the scope means as rows, base first."""
    curve = curve.assign(row=[f"{scope} | {domain}.{language}" if domain != "mean" else f"{scope} | **mean**"
                              for scope, domain, language in zip(curve["scope"], curve["domain"], curve["language"])])
    pivot = curve.pivot_table(index="row", columns="scale", values="retrofitted", sort=False)
    pivot = pivot[sorted(pivot.columns, key=lambda s: curve.loc[curve["scale"] == s, "scale_rows"].iloc[0])]
    pivot.insert(0, "base", curve.groupby("row", sort=False)["base"].first())
    return pivot.sort_index().to_markdown(floatfmt=".4f")


def data_scale_plot_png(means: pd.DataFrame) -> bytes:
    """means: per scale and scope, the mean score (retrofitted, base) and the interval of the gain."""
    figure, axis = _new_figure((7, 4.5))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for (scope, group), color in zip(means.groupby("scope"), colors):
        group = group.sort_values("scale_rows")
        errors = np.vstack([group["gain"] - group["ci_low"], group["ci_high"] - group["gain"]])
        axis.errorbar(group["scale_rows"], group["retrofitted"], yerr=errors, marker="o", linewidth=2, capsize=3, color=color,
                      label=f"{scope} (95 % CI of the gain)")
        axis.axhline(float(group["base"].iloc[0]), linestyle="--", color=color, alpha=0.6, label=f"{scope} base")
    axis.set_xscale("log")
    axis.set_xlabel("training pairs")
    axis.set_ylabel("mean nDCG@10 (bitext: F1)")
    axis.set_title("Retrieval quality vs. training data scale")
    axis.legend(fontsize=7)
    return _png_bytes(figure)


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def loss_curve_png(losses: list[float]) -> bytes:
    figure, axis = _new_figure((6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    axis.plot(steps, losses, alpha=0.35, label="loss")
    if len(losses) >= 5:
        window = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smooth, linewidth=2, label=f"moving mean ({window})")
    axis.set_xlabel("step")
    axis.set_ylabel("InfoNCE loss")
    axis.legend()
    return _png_bytes(figure)


def merge_curve_table(curve: list[dict]) -> str:
    """The merge alpha curve: per alpha, each dev scope's gain over the base."""
    rows = [{"alpha": entry["alpha"], **{scope: f"{values['gain']:+.4f}" for scope, values in entry["means"].items()}} for entry in curve]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def merge_curve_png(curve: list[dict]) -> bytes:
    figure, axis = _new_figure((6, 3.5))
    scopes = sorted({scope for entry in curve for scope in entry["means"]})
    alphas = [entry["alpha"] for entry in curve]
    for scope in scopes:
        axis.plot(alphas, [entry["means"].get(scope, {}).get("gain", np.nan) for entry in curve], marker="o", label=scope)
    axis.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("alpha (weight of the base model)")
    axis.set_ylabel("dev gain over the base")
    axis.set_title("Weight averaging with the base: dev split")
    axis.legend(fontsize=7)
    return _png_bytes(figure)
