"""The one path every model is scored through: base model, checkpoints, merged and promoted ones.

mteb drives the evaluation (its retrieval and bitext-mining evaluators compute the scores); it asks
this wrapper for embeddings. The wrapper encodes with the model's own prompts (as saved with it),
at one evaluation length (the model's own maximum unless `evaluation.max_length` sets a budget) and
one precision, through `encoder.encode_texts`, and keeps every embedding in the model's
EmbeddingStore: a text is encoded once per model, whichever scope or asset asks for it again.
When the recipe trains only the top layers, the states of the lower ones are stored too
(shared_layers.py): a checkpoint that shares them with its base runs only its own layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper, _resolve_prompt
from sentence_transformers import SentenceTransformer

from .embedding_store import EmbeddingStore, model_identity, text_key
from .encoder import encode_texts
from .shared_layers import SharedLayerStates, split_layer

SAVE_EVERY = 2000  # new embeddings between two writes of a model's store


def evaluation_length(model: SentenceTransformer, configured: int | None) -> int:
    """The length a model is scored at: its own maximum, or the configured budget when smaller."""
    own = int(model.max_seq_length)
    return min(own, int(configured)) if configured else own


class ScoringEncoder(SentenceTransformerEncoderWrapper):
    """`model` (loaded from `model_dir` without overrides, as a user loads it) for mteb, its
    embeddings cached in `store_root`. `counts` says how many texts were served and encoded.
    `trained_top_layers` (the recipe's `training.trainable_top_layers`) names the layers below which
    states are stored and reused under `store_root/shared-layers` (None: every layer trains)."""

    def __init__(self, model: SentenceTransformer, model_dir: str, store_root, max_length: int | None = None,
                 precision: str = "fp32", batch_size: int = 64, trained_top_layers: int | None = None):
        super().__init__(model)
        self.identity = model_identity(model_dir)
        self.max_length = evaluation_length(model, max_length)
        self.precision = precision
        self.batch_size = batch_size
        self.store = EmbeddingStore(store_root, self.identity, self.max_length, precision)
        # served from the store; encoded; of those encoded, how many ran only the layers above the shared ones
        self.counts = {"served": 0, "encoded": 0, "from_shared_layers": 0}
        split = split_layer(model, trained_top_layers)
        self.shared_layers = None if split is None else SharedLayerStates(
            Path(store_root) / "shared-layers", model, split, self.max_length, precision)

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.model_prompts or {})

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        prompt = _resolve_prompt(self.model_prompts, task_metadata, prompt_type)
        if prompt is None and prompt_type is None:
            # A symmetric task (bitext mining): E5-style models use their query prompt on both sides.
            prompt = self.prompts.get("query")
        texts = [text for batch in inputs for text in batch["text"]]
        return self.embed(texts, prompt or "")

    def embed_subsets(self, subsets) -> None:
        """Encodes every text `subsets` will ask for in one call per prompt before mteb runs, so
        that batches are formed by token length over the whole evaluation (across languages)
        rather than per subset; mteb's requests are then served from the store. Bitext mining
        uses the query prompt on both sides, as `encode` does."""
        queries, documents = [], []
        for subset in subsets:
            if subset.pairs is not None:
                queries += subset.pairs["text"].tolist() + subset.pairs["target"].tolist()
            else:
                queries += subset.queries["text"].tolist()
                documents += subset.corpus["text"].tolist()
        self.embed(list(dict.fromkeys(queries)), self.prompts.get("query", ""))
        self.embed(list(dict.fromkeys(documents)), self.prompts.get("document", ""))

    def embed(self, texts: list[str], prompt: str = "") -> np.ndarray:
        """Normalized embeddings of `texts` (each with `prompt` prepended), in order."""
        keys = [text_key(prompt, text) for text in texts]
        first_of: dict[bytes, int] = {}
        for position, key in enumerate(keys):
            first_of.setdefault(key, position)
        unique_keys = list(first_of)
        found, _ = self.store.lookup(unique_keys)
        missing = [key for key, known in zip(unique_keys, found) if not known]
        if missing:
            vectors = encode_texts(self.model, [texts[first_of[key]] for key in missing], prompt, self.batch_size,
                                   self.max_length, self.precision, description=f"encode ({len(missing)} new texts)",
                                   shared_layers=self.shared_layers)
            self.store.add(missing, vectors)
            if self.shared_layers is not None:
                self.shared_layers.save()
                self.counts["from_shared_layers"] = self.shared_layers.counts["reused"]
            self.store.save(min_new_rows=SAVE_EVERY)  # a crash keeps most of the work; `save()` writes the rest
        self.counts["encoded"] += len(missing)
        self.counts["served"] += len(texts) - len(missing)
        _, result = self.store.lookup(keys)
        return result
