"""The measured sweep behind the default recipe, and the paper's ablations, on the shipped data.

    .venv/bin/python scripts/recipe_sweep.py                    # every variant below, at scale 2k
    .venv/bin/python scripts/recipe_sweep.py --only lr_1e-4 none --scale 2k
    .venv/bin/python scripts/recipe_sweep.py --curve 500 1k 2k 4k 8k   # the data-scale curve of the default

Each variant is the default preset with a few keys changed, run as its own experiment
(`artifacts/sweep-<variant>/`) through the real Dagster assets: training_mixture -> hard_negatives
-> encoder_checkpoint -> faiss_index -> retrieval_scores. The data every variant shares (raw
corpora, evaluation set, training pool, base-model scores) is materialized once by the default
experiment and copied into each variant's folder first: the variants differ only in what they
change, and the evaluation fingerprint check in retrieval_scores proves they are scored on the
same queries. The script writes one table (docs/SWEEP.md by default): in-domain and out-of-domain
means with the paired bootstrap interval of each gain over the base model, and, for every variant,
the paired difference against the default."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "assets" / "presets" / "default.yaml"

# name -> (overrides of the default preset, what it measures)
VARIANTS: dict[str, tuple[dict, str]] = {
    "default": ({}, "the shipped recipe"),
    "lr_1e-5": ({"training": {"learning_rate": 1.0e-5}}, "learning rate"),
    "lr_5e-5": ({"training": {"learning_rate": 5.0e-5}}, "learning rate"),
    "lr_1e-4": ({"training": {"learning_rate": 1.0e-4}}, "learning rate (the old default's)"),
    "epochs_2": ({"training": {"epochs": 2}}, "steps: twice the steps on the same pairs"),
    "all_layers": ({"training": {"trainable_top_layers": None}}, "which weights move: every layer and the embeddings"),
    "top_3_layers": ({"training": {"trainable_top_layers": 3}}, "which weights move: the top 3 of 12 layers"),
    "wise_ft_0.5": ({"training": {"interpolate_with_base": 0.5}}, "which weights move: WiSE-FT halfway back to the base"),
    "dropout_0.1": ({"training": {"dropout": 0.1}}, "dropout as pre-trained (0.1) instead of off"),
    "general_in_mixture": ({"evaluation": {"held_out_domains": []}},
                           "general-domain data in the mixture: Wikipedia trained on (its held-out articles still scored)"),
    "random_negatives": ({"negatives": {"strategy": "random"}}, "ablation: a random negative instead of a mined one"),
    "in_batch_only": ({"negatives": {"strategy": "none"}}, "ablation: no extra negative (in-batch only)"),
    "language_diverse": ({"mixture": {"policy": "language_diverse"}}, "ablation: language-diverse mixture at equal size"),
}
# variant -> the variant it is compared with, paired per query: every one changes the default
ABLATION_OF = {name: "default" for name in VARIANTS if name != "default"}
SHARED = ("raw", "evaluation", "scores/base")


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def write_preset(name: str, overrides: dict, directory: Path) -> Path:
    preset = _merge({"extends": str(DEFAULT), "name": f"sweep-{name}" if name != "default" else "default"}, overrides)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def run(preset: Path, selection: list[str], partition: str | None) -> None:
    from dagster import DagsterInstance, materialize

    from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
    from retrofit_pipeline.definitions import defs

    result = materialize(list(defs.assets) + list(defs.asset_checks), selection=selection, partition_key=partition,
                         instance=DagsterInstance.get(), resources={"settings": RetrofitSettings(config_path=str(preset))},
                         raise_on_error=True)
    assert result.success


def share_data(default_root: Path, variant_root: Path, scale: str, training_only: bool, own_pool: bool) -> None:
    """Copies what the variant shares with the default: always the raw data, evaluation set and base
    scores (without the training pool when the variant builds its own); for a variant that changes
    only training, also the default's mixture and negatives of the scale (so the checkpoints differ
    by the training settings alone)."""
    parts = list(SHARED)
    if training_only:
        parts += [f"mixture/{scale}.parquet", f"negatives/{scale}.parquet", f"negatives/{scale}.report.json"]
    for part in parts:
        source, target = default_root / part, variant_root / part
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    if own_pool:
        for name in ("training_pool.parquet", "training_pool.cleaning.json"):
            (variant_root / "raw" / name).unlink(missing_ok=True)


def summary_row(name: str, scale: str, root: Path, what: str, seconds: float | None, held_out_domains: list[str]) -> dict:
    """The variant's means against the base, in the default's scopes (so a variant that trains on a
    held-out domain is still reported per domain, comparably), with paired bootstrap intervals."""
    from retrofit_pipeline.comparison import paired_comparison

    comparison = paired_comparison(pd.read_parquet(root / "scores" / "base" / "per_query.parquet"),
                                   pd.read_parquet(root / "scores" / scale / "per_query.parquet"), held_out_domains)
    row = {"variant": name, "scale": scale, "what it changes": what, "minutes": f"{seconds / 60:.1f}" if seconds is not None else "earlier run"}
    for scope, group in comparison[comparison["domain"] == "mean"].groupby("scope"):
        mean = group.iloc[0]
        row[f"{scope} base"] = f"{mean['base']:.4f}"
        row[f"{scope}"] = f"{mean['retrofitted']:.4f}"
        row[f"{scope} gain [95% CI]"] = f"{mean['gain']:+.4f} [{mean['ci_low']:+.4f}, {mean['ci_high']:+.4f}]"
    return row


def ablation_rows(results: dict[str, Path], scale: str, held_out_domains: list[str]) -> list[dict]:
    from retrofit_pipeline.comparison import paired_comparison

    rows = []
    for ablation, reference in ABLATION_OF.items():
        if ablation not in results or reference not in results:
            continue
        reference_scores = pd.read_parquet(results[reference] / "scores" / scale / "per_query.parquet")
        ablation_scores = pd.read_parquet(results[ablation] / "scores" / scale / "per_query.parquet")
        comparison = paired_comparison(reference_scores, ablation_scores, held_out_domains)
        for row in comparison[comparison["domain"] == "mean"].itertuples():
            rows.append({"variant": ablation, "against": reference, "scope": row.scope, "nDCG@10 of the reference": f"{row.base:.4f}",
                         "nDCG@10 of the variant": f"{row.retrofitted:.4f}", "difference [95% CI]": f"{row.gain:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help=f"variants to run (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--scale", default="2k")
    parser.add_argument("--curve", nargs="+", help="data-scale partitions of the default to train and score instead of the variants")
    parser.add_argument("--out", default=str(REPO / "docs" / "SWEEP.md"))
    parser.add_argument("--force", action="store_true", help="re-run variants that are scored already")
    args = parser.parse_args()
    os.environ.setdefault("DAGSTER_HOME", str(REPO / ".dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RETROFIT_CONFIG", str(DEFAULT))
    from retrofit_pipeline.config import load_config

    presets_dir = REPO / "artifacts" / "sweep-presets"
    presets_dir.mkdir(parents=True, exist_ok=True)
    default_config = load_config(DEFAULT)
    default_root = default_config.experiment_dir
    if not all((default_root / part).exists() for part in SHARED):
        print("materializing the shared data once (raw corpora, evaluation set, training pool, base scores)", flush=True)
        run(DEFAULT, ["raw_corpora", "evaluation_set", "training_pool", "base_model_scores"], None)

    per_scale = ["training_mixture", "hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"]
    rows, results = [], {}
    jobs = [("default", scale) for scale in args.curve] if args.curve else [(name, args.scale) for name in (args.only or VARIANTS)]
    for name, scale in jobs:
        overrides, what = VARIANTS[name]
        preset = write_preset(name, overrides, presets_dir)
        root = load_config(preset).experiment_dir
        training_only = set(overrides) <= {"training"} and name != "default"
        own_pool = "evaluation" in overrides  # held-out domains change what the training pool may hold
        if root != default_root:
            if training_only and not (default_root / "negatives" / f"{scale}.parquet").exists():
                run(DEFAULT, per_scale[:2], scale)  # the default's mixture and negatives, shared by training variants
            share_data(default_root, root, scale, training_only, own_pool)
            if own_pool:
                run(preset, ["training_pool"], None)
        started = time.perf_counter()
        if (root / "scores" / scale / "comparison.parquet").exists() and not args.force:
            print(f"== {name} at {scale}: scored already (--force re-runs it)", flush=True)
            started = None
        else:
            print(f"== {name} at {scale}: {what}", flush=True)
            run(preset, per_scale[2:] if training_only else per_scale, scale)
        results[name] = root
        rows.append(summary_row(name, scale, root, what if not args.curve else f"data scale {scale}", time.perf_counter() - started if started is not None else None,
                                default_config.evaluation.held_out_domains))
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)

    # Cells are formatted here; disable_numparse keeps tabulate from re-parsing "16.6" minutes as a score.
    table = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    ablations = ablation_rows(results, args.scale, default_config.evaluation.held_out_domains)
    text = [f"Measured with `{' '.join(['.venv/bin/python', 'scripts/recipe_sweep.py'] + sys.argv[1:])}`; "
            "nDCG@10 means, paired bootstrap 95 % intervals over queries.", "", table]
    if ablations:
        text += ["", "Each variant paired per query against the variant it changes (the default):", "", pd.DataFrame(ablations).to_markdown(index=False, disable_numparse=True)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text) + "\n", encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
