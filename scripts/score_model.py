"""Scores any sentence-transformers model directory on an experiment's evaluation scopes, through
the same path as its checkpoints, and pairs it per query against that experiment's base scores.

    .venv/bin/python scripts/score_model.py <model_dir> <out_dir> [--config assets/presets/default.yaml]

Needs the experiment's evaluation_set and base_model_scores (run `retrofit run` first). Writes
<out_dir>/per_query.parquet, scores.parquet, summary.json and vs_base.md (every subset), and prints
the scope means. Used to score the previous default's checkpoint on today's evaluation."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--config", help="the experiment's preset (default: RETROFIT_CONFIG or the shipped default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.config:
        os.environ["RETROFIT_CONFIG"] = str(Path(args.config).resolve())

    from retrofit_pipeline.comparison import comparison_markdown, paired_comparison
    from retrofit_pipeline.dagster_defs.evaluation_plan import evaluation_plan
    from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
    from retrofit_pipeline.scoring import read_scores, score_model_dir

    logging.disable(logging.WARNING)
    settings = RetrofitSettings()
    config, paths = settings.pipeline(), settings.paths()
    plan = evaluation_plan(settings)
    out = Path(args.out_dir)
    _, per_query, summary = score_model_dir(args.model_dir, plan.subsets, plan.fingerprint, out, paths.embeddings,
                                            config.evaluation, args.device, trained_top_layers=config.training.trainable_top_layers)
    base, base_summary = read_scores(paths.base_scores, plan.fingerprint, "base")
    if base_summary["max_length"] != summary["max_length"]:
        raise SystemExit(f"the base was scored at {base_summary['max_length']} tokens, {args.model_dir} at "
                         f"{summary['max_length']}: scores at different lengths are not compared")
    comparison = paired_comparison(base, per_query)
    (out / "vs_base.md").write_text(comparison_markdown(comparison), encoding="utf-8")
    print(comparison_markdown(comparison, means_only=True))
    print(f"every subset: {out / 'vs_base.md'}")


if __name__ == "__main__":
    main()
