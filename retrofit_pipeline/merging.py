"""Weight-space merging with the base model (WiSE-FT, Wortsman et al. 2022; FlagEmbedding's
LM-Cocktail merges the same way): merged = (1 - alpha) * trained + alpha * base.

Fine-tuning moves the weights towards the training data; averaging with the base keeps much of
that gain while restoring what the base did well elsewhere (here: retrieval over a corpus of many
languages, which a short retrofit on monolingual and bitext pairs biases towards the query's own
language). alpha is chosen on the dev split (in-domain, pooled and cross-lingual queries of
documents never scored in the reported scopes), by `choose_alpha`."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .artifact_io import atomic_directory

WEIGHTS = "model.safetensors"


def write_merged(trained_dir: Path, base_dir: Path, alpha: float, out_dir: Path) -> Path:
    """A copy of the checkpoint in `trained_dir` whose floating-point weights are moved `alpha` of
    the way back to the base's (same architecture, same tensor names), written atomically."""
    trained, base = load_file(str(Path(trained_dir) / WEIGHTS)), load_file(str(Path(base_dir) / WEIGHTS))
    missing = sorted(set(trained) - set(base))
    if missing:
        raise ValueError(f"cannot merge {trained_dir} with its base {base_dir}: the base has no tensor {missing[:3]}")
    merged = {}
    for name, tensor in trained.items():
        if tensor.is_floating_point():
            if base[name].shape != tensor.shape:
                raise ValueError(f"cannot merge {trained_dir} with its base {base_dir}: {name} has shape {tuple(tensor.shape)} "
                                 f"vs {tuple(base[name].shape)}")
            merged[name] = torch.lerp(tensor, base[name].to(tensor.dtype), alpha).contiguous()
        else:
            merged[name] = tensor
    with atomic_directory(Path(out_dir)) as tmp:
        shutil.copytree(trained_dir, tmp, dirs_exist_ok=True)
        save_file(merged, str(tmp / WEIGHTS), metadata={"format": "pt"})
    return Path(out_dir)


def choose_alpha(curve: list[dict]) -> tuple[float, str]:
    """`curve`: one entry per alpha, {"alpha", "means": {scope: {"gain", ...}}} (dev split, paired
    against the base). The rule: among the alphas with no dev scope below the base, the one with
    the highest mean gain over the scopes (ties: the smaller alpha, the more trained); if every
    alpha leaves some scope below the base, the one whose worst scope is least below."""
    def gains(entry: dict) -> list[float]:
        return [values["gain"] for values in entry["means"].values()]

    safe = [entry for entry in curve if min(gains(entry)) >= 0]
    if safe:
        best = max(safe, key=lambda entry: (sum(gains(entry)) / len(gains(entry)), -entry["alpha"]))
        return float(best["alpha"]), (f"alpha {best['alpha']}: the highest mean dev gain ({sum(gains(best)) / len(gains(best)):+.4f}) "
                                      "among the alphas with no dev scope below the base")
    best = max(curve, key=lambda entry: (min(gains(entry)), -entry["alpha"]))
    return float(best["alpha"]), (f"alpha {best['alpha']}: every alpha leaves a dev scope below the base; this one's worst scope "
                                  f"is least below ({min(gains(best)):+.4f})")
