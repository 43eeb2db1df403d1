"""Score tables and the data-scale plot, as markdown and PNG."""

from __future__ import annotations

import base64
import io

import pandas as pd


def score_table_markdown(base: pd.DataFrame, tuned: pd.DataFrame | None, metric: str = "ndcg_at_10") -> str:
    table = base[["language", metric]].rename(columns={metric: "base"})
    if tuned is not None:
        table = table.merge(tuned[["language", metric]].rename(columns={metric: "retrofitted"}), on="language", how="outer")
        table["gain"] = table["retrofitted"] - table["base"]
    mean = table.drop(columns="language").mean().to_dict()
    table = pd.concat([table, pd.DataFrame([{"language": "mean", **mean}])], ignore_index=True)
    return table.to_markdown(index=False, floatfmt=".4f")


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


def data_scale_plot_png(curve: pd.DataFrame, base_mean: float | None) -> bytes:
    """curve: columns scale_rows, language, ndcg_at_10 (one line per language plus the mean)."""
    figure, axis = _new_figure((7, 4.5))
    for language, group in curve.groupby("language"):
        group = group.sort_values("scale_rows")
        style = {"linewidth": 3, "color": "black"} if language == "mean" else {"linewidth": 1, "alpha": 0.7}
        axis.plot(group["scale_rows"], group["ndcg_at_10"], marker="o", label=language, **style)
    if base_mean is not None:
        axis.axhline(base_mean, linestyle="--", color="grey", label="base (mean)")
    axis.set_xscale("log")
    axis.set_xlabel("training pairs")
    axis.set_ylabel("nDCG@10")
    axis.set_title("Retrieval quality vs. training data scale")
    axis.legend(fontsize=7, ncol=2)
    return _png_bytes(figure)


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def loss_curve_png(losses: list[float]) -> bytes:
    import numpy as np

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
