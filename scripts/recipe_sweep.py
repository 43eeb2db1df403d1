"""The measured sweep behind the default recipe, and the paper's ablations, on the shipped data:
chosen on dev, reported on the scored scopes.

    .venv/bin/python scripts/recipe_sweep.py                    # every variant below, ranked on dev, at scale 2k
    .venv/bin/python scripts/recipe_sweep.py --only default lr_5e-5 --report lr_5e-5
    .venv/bin/python scripts/recipe_sweep.py --curve 500 1k 2k 4k 8k   # the data-scale curve of the default

Each variant is the default preset with a few keys changed, run as its own experiment
(`artifacts/sweep-<variant>/`) through the real Dagster assets: training_mixture -> hard_negatives
-> encoder_checkpoint -> dev_scores. Variants are compared and ranked on the DEV split only (every
scope, on document identities disjoint from the scored ones; evaluation.dev_fraction); the rule is
`choose`'s. The scored scopes (faiss_index -> retrieval_scores) are then read once, for the chosen
variant and for the variants named by --report (what docs/RESULTS.md reports): choose on dev, report on
test. The data every variant shares (raw corpora, evaluation set, training pool, base-model scores
on both splits) is materialized once by the default experiment and copied into each variant's
folder first; the evaluation fingerprint checks prove they are scored on the same queries. The
script writes one file (docs/sweep/recipe.md by default): the dev table with the choice, then the
scored table of the chosen and reported variants, each gain over the base and each difference
against the default with its paired bootstrap interval."""

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

TEACHER = "registry:embeddinggemma-300m"

# name -> (overrides of the default preset, what it measures)
VARIANTS: dict[str, tuple[dict, str]] = {
    "default": ({}, "the shipped recipe"),
    # Levers against forgetting and language bias (issue 14), each changing one thing of the default:
    "merge": ({"merge": {"alphas": [0.0, 0.25, 0.5, 0.75]}}, "weight averaging with the base, alpha chosen on the dev split"),
    "random_batches": ({"training": {"batching": "random"}}, "batches drawn at random over languages (the default before 2026-12-04)"),
    "translation_positives": ({"training": {"translation_positives": 1}}, "a translation of each positive joins the batch as a positive"),
    "distill_1": ({"training": {"distill_weight": 1.0}}, "+ KL to the frozen base's in-batch distribution (weight 1)"),
    "distill_0.25": ({"training": {"distill_weight": 0.25}}, "+ KL to the frozen base's in-batch distribution (weight 0.25; the default since 2026-12-07)"),
    "no_distillation": ({"training": {"distill_weight": 0.0}}, "no distillation from the base (the default before 2026-12-07)"),
    "lora_r16": ({"training": {"lora": {"r": 16, "alpha": 32}, "trainable_top_layers": None}}, "LoRA adapters (r 16) on every layer instead of the top 6"),
    "lora_r16_lr_1e-4": ({"training": {"lora": {"r": 16, "alpha": 32}, "trainable_top_layers": None, "learning_rate": 1.0e-4}},
                         "LoRA adapters (r 16) at their usual higher learning rate (1e-4)"),
    "temperature_0.01_translation_positives": ({"training": {"temperature": 0.01, "translation_positives": 1}},
                                               "temperature 0.01 with translations of the positive as extra positives"),
    "temperature_0.01": ({"training": {"temperature": 0.01}}, "temperature 0.01 (E5's own)"),
    "temperature_0.05": ({"training": {"temperature": 0.05}}, "temperature 0.05"),
    "lr_1e-5": ({"training": {"learning_rate": 1.0e-5}}, "learning rate"),
    "lr_5e-5": ({"training": {"learning_rate": 5.0e-5}}, "learning rate"),
    "epochs_2": ({"training": {"epochs": 2}}, "steps: twice the steps on the same pairs"),
    "all_layers": ({"training": {"trainable_top_layers": None}}, "which weights move: every layer and the embeddings"),
    "dropout_0.1": ({"training": {"dropout": 0.1}}, "dropout as pre-trained (0.1) instead of off"),
    # The paper's ablations:
    "random_negatives": ({"negatives": {"strategy": "random"}}, "ablation: a random negative instead of a mined one"),
    "in_batch_only": ({"negatives": {"strategy": "none"}}, "ablation: no extra negative (in-batch only)"),
    "language_diverse": ({"mixture": {"policy": "language_diverse"}}, "ablation: language-diverse mixture at equal size"),
    # A strong teacher (issue 23): EmbeddingGemma-300M, assembled from PyPI once and verified by sha256.
    "teacher_mining": ({"negatives": {"teacher": TEACHER}}, "negatives mined by EmbeddingGemma-300M's ranking (its margins and baseline)"),
    "teacher_distillation": ({"negatives": {"teacher": TEACHER, "mine_with": "base"}, "training": {"distill_from": "teacher"}},
                             "distillation (0.25) from EmbeddingGemma-300M's stored scores instead of the base's; base mining"),
    "teacher_both": ({"negatives": {"teacher": TEACHER}, "training": {"distill_from": "teacher"}},
                     "EmbeddingGemma-300M mines and is distilled from"),
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

    from retrofit_pipeline.dagster_defs.pools import owner_tags, pool_notes
    from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
    from retrofit_pipeline.definitions import defs

    instance = DagsterInstance.get()
    for note in pool_notes(instance):
        print(note, flush=True)
    result = materialize(list(defs.assets) + list(defs.asset_checks), selection=selection, partition_key=partition,
                         instance=instance, resources={"settings": RetrofitSettings(config_path=str(preset))},
                         raise_on_error=False, tags=owner_tags())
    failed_checks = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed})
    if failed_checks:
        print(f"   checks failed (recorded, the sweep goes on): {', '.join(failed_checks)}", flush=True)
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure} - {"retrieval_scores_no_forgetting"}
    if failed_steps:
        raise RuntimeError(f"{preset.name}: steps failed: {sorted(failed_steps)} (the run is in the Dagster instance)")


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


def _cell(values: dict) -> str:
    return f"{values['gain']:+.4f} [{values['ci_low']:+.4f}, {values['ci_high']:+.4f}]"


def summary_row(name: str, scale: str, root: Path, what: str, seconds: float | None, split: str = "") -> dict:
    """The variant's gain over the base on every scope of `split` ("" the scored set, "dev"), with its
    paired bootstrap interval (a variant that trains on a held-out domain is still reported in the
    default's scopes)."""
    from retrofit_pipeline.comparison import paired_comparison, scope_means

    means = scope_means(paired_comparison(pd.read_parquet(root / "scores" / "base" / split / "per_query.parquet"),
                                          pd.read_parquet(root / "scores" / scale / split / "per_query.parquet")))
    row = {"variant": name, "scale": scale, "what it changes": what}
    row.update({f"{scope} gain [95% CI]": _cell(values) for scope, values in means.items()})
    row["minutes"] = f"{seconds / 60:.1f}" if seconds is not None else "earlier run"
    return row


def ablation_rows(results: dict[str, Path], scale: str, split: str = "") -> list[dict]:
    """Each variant paired per query against the variant it changes, one row per variant, a column per scope."""
    from retrofit_pipeline.comparison import paired_comparison, scope_means

    rows = []
    for ablation, reference in ABLATION_OF.items():
        if ablation not in results or reference not in results:
            continue
        means = scope_means(paired_comparison(pd.read_parquet(results[reference] / "scores" / scale / split / "per_query.parquet"),
                                              pd.read_parquet(results[ablation] / "scores" / scale / split / "per_query.parquet")))
        rows.append({"variant": ablation, "against": reference, **{f"{scope} difference [95% CI]": _cell(v) for scope, v in means.items()}})
    return rows


def dev_means(root: Path, scale: str) -> dict:
    """The variant's dev-split gains over the base, per scope (dev_scores' comparison)."""
    from retrofit_pipeline.comparison import scope_means

    return scope_means(pd.read_parquet(root / "scores" / scale / "dev" / "comparison.parquet"))


def choose(dev: dict[str, dict], margin: float) -> tuple[str, str]:
    """(the chosen variant, the rule): among the variants whose dev in-domain gain interval is above
    zero and whose dev gain is not below -margin on any other scope (point estimates: the dev split
    is small, its intervals are for reading, not for gating), the highest mean of the scope gains,
    each scope weighing the same; the default wins ties and when nothing qualifies."""
    def qualifies(means: dict) -> bool:
        return means["in-domain"]["ci_low"] > 0 and all(v["gain"] >= -margin for scope, v in means.items() if scope != "in-domain")

    def score(means: dict) -> float:
        return sum(v["gain"] for v in means.values()) / len(means)

    eligible = {name: score(means) for name, means in dev.items() if qualifies(means)}
    rule = (f"on dev: in-domain gain interval above zero, no other scope's gain below -{margin}, then the highest mean of the "
            "scope gains (each scope weighing the same); the default on ties")
    if not eligible:
        return "default", rule + " (no variant qualified)"
    best = max(eligible.values())
    return ("default" if eligible.get("default") == best else max(eligible, key=eligible.get)), rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help=f"variants to run (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--report", nargs="*", default=[], help="variants whose scored scopes are read too (the chosen one always is)")
    parser.add_argument("--scale", default="2k")
    parser.add_argument("--curve", nargs="+", help="data-scale partitions of the default to train and score instead of the variants")
    parser.add_argument("--out", default=str(REPO / "docs" / "sweep" / "recipe.md"))
    parser.add_argument("--force", action="store_true", help="re-run variants that are scored already")
    args = parser.parse_args()
    os.environ.setdefault("DAGSTER_HOME", str(REPO / ".dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RETROFIT_CONFIG", str(DEFAULT))
    from retrofit_pipeline.config import load_config

    presets_dir = REPO / "artifacts" / "sweep-presets"
    presets_dir.mkdir(parents=True, exist_ok=True)
    default_config = load_config(DEFAULT)
    if default_config.evaluation.dev_fraction <= 0:
        sys.exit("the default preset has no dev split (evaluation.dev_fraction): the sweep chooses on dev")
    default_root = default_config.experiment_dir
    if not all((default_root / part).exists() for part in SHARED) or not (default_root / "scores" / "base" / "dev").exists():
        print("materializing the shared data once (raw corpora, evaluation set, training pool, base scores on both splits)", flush=True)
        run(DEFAULT, ["raw_corpora", "evaluation_set", "training_pool", "base_model_scores"], None)

    per_scale = ["training_mixture", "hard_negatives", "encoder_checkpoint", "dev_scores"]
    scored = ["faiss_index", "retrieval_scores"]
    jobs = [("default", scale) for scale in args.curve] if args.curve else [(name, args.scale) for name in (args.only or VARIANTS)]
    roots, seconds, dev = {}, {}, {}
    for name, scale in jobs:
        overrides, what = VARIANTS[name]
        preset = write_preset(name, overrides, presets_dir)
        root = load_config(preset).experiment_dir
        training_only = set(overrides) <= {"training", "merge"} and name != "default"
        own_pool = "evaluation" in overrides  # held-out domains change what the training pool may hold
        if root != default_root:
            if training_only and not (default_root / "negatives" / f"{scale}.parquet").exists():
                run(DEFAULT, per_scale[:2], scale)  # the default's mixture and negatives, shared by training variants
            share_data(default_root, root, scale, training_only, own_pool)
            if own_pool:
                run(preset, ["training_pool"], None)
        started = time.perf_counter()
        if (root / "scores" / scale / "dev" / "comparison.parquet").exists() and not args.force:
            print(f"== {name} at {scale}: scored on dev already (--force re-runs it)", flush=True)
        else:
            print(f"== {name} at {scale}: {what}", flush=True)
            run(preset, per_scale[2:] if training_only else per_scale, scale)
            seconds[(name, scale)] = time.perf_counter() - started
        roots[(name, scale)] = root
        dev[(name, scale)] = dev_means(root, scale)

    if args.curve:  # the curve is the default's own data-scale report: every scale's scored scopes
        to_report = list(jobs)
    else:
        chosen, rule = choose({name: dev[(name, args.scale)] for name, _ in jobs}, default_config.evaluation.forgetting_margin)
        to_report = [(name, args.scale) for name in dict.fromkeys([chosen, "default", *args.report]) if (name, args.scale) in roots]
    for name, scale in to_report:
        root = roots[(name, scale)]
        if not (root / "scores" / scale / "comparison.parquet").exists() or args.force:
            print(f"== {name} at {scale}: the scored scopes", flush=True)
            started = time.perf_counter()
            run(write_preset(name, VARIANTS[name][0], presets_dir), scored, scale)
            seconds[(name, scale)] = seconds.get((name, scale), 0.0) + time.perf_counter() - started

    def label(name: str, scale: str) -> str:
        return VARIANTS[name][1] if not args.curve else f"data scale {scale}"

    dev_rows = [summary_row(name, scale, roots[(name, scale)], label(name, scale), seconds.get((name, scale)), "dev") for name, scale in jobs]
    test_rows = [summary_row(name, scale, roots[(name, scale)], label(name, scale), seconds.get((name, scale))) for name, scale in to_report]
    command = " ".join(["`.venv/bin/python", "scripts/recipe_sweep.py"] + sys.argv[1:]) + "`"
    text = [f"Measured with {command}: gains over the base model per scope (nDCG@10; F1 for bitext), paired bootstrap 95 % "
            "intervals over queries; scope means weigh queries.", ""]
    if not args.curve:
        text += [f"**Dev split** (what variants are chosen on). Choice: **{chosen}** ({rule}).", "",
                 pd.DataFrame(dev_rows).to_markdown(index=False, disable_numparse=True)]
        dev_ablations = ablation_rows({name: roots[(name, s)] for name, s in jobs}, args.scale, "dev")
        if dev_ablations:
            text += ["", "Dev: each variant paired per query against the default:", "",
                     pd.DataFrame(dev_ablations).to_markdown(index=False, disable_numparse=True)]
        text += ["", f"**Scored scopes** (read once, for the chosen variant and the reported ones: {', '.join(n for n, _ in to_report)}):", ""]
    # Cells are formatted here; disable_numparse keeps tabulate from re-parsing "16.6" minutes as a score.
    text += [pd.DataFrame(test_rows).to_markdown(index=False, disable_numparse=True)]
    ablations = ablation_rows({name: roots[(name, s)] for name, s in to_report}, args.scale) if not args.curve else []
    if ablations:
        text += ["", "Scored scopes: each variant paired per query against the default:", "",
                 pd.DataFrame(ablations).to_markdown(index=False, disable_numparse=True)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text) + "\n", encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
