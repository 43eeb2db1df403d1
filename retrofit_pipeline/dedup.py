"""Exact and near-duplicate detection for text: normalized keys and MinHash with LSH banding.

Character n-gram shingles work for every script (no tokenizer needed for Chinese or Japanese)."""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import defaultdict

import numpy as np

_PUNCTUATION_RE = re.compile(r"[\W_]+", re.UNICODE)
_MERSENNE_PRIME = (1 << 61) - 1


def normalize_text(text: str) -> str:
    """Case, width, accents-as-composed, punctuation and spacing differences are not differences."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCTUATION_RE.sub(" ", text).strip()


def _shingles(text: str, n: int) -> np.ndarray:
    normalized = normalize_text(text).replace(" ", "")
    if len(normalized) <= n:
        return np.array([zlib.crc32(normalized.encode("utf-8"))], dtype=np.uint64)
    grams = {normalized[i : i + n] for i in range(len(normalized) - n + 1)}
    return np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))


class MinHasher:
    def __init__(self, num_perm: int = 64, shingle_size: int = 5, seed: int = 13):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _MERSENNE_PRIME, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _MERSENNE_PRIME, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm
        self.shingle_size = shingle_size

    def signature(self, text: str) -> np.ndarray:
        shingles = _shingles(text, self.shingle_size)
        # (a*x + b) mod p in uint64 wraps; that keeps it a fixed, well-mixed hash family, which is all MinHash needs.
        hashed = (np.outer(shingles, self.a) + self.b) % _MERSENNE_PRIME
        return hashed.min(axis=0)

    def signatures(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.signature(t) for t in texts]) if texts else np.zeros((0, self.num_perm), np.uint64)


def near_duplicate_groups(signatures: np.ndarray, threshold: float, bands: int = 16) -> list[int]:
    """For each row, the index of the first earlier row whose estimated Jaccard similarity is at
    least `threshold` (itself if none). Candidates come from LSH buckets; each is verified."""
    rows_per_band = signatures.shape[1] // bands
    buckets: dict[tuple, list[int]] = defaultdict(list)
    representative = list(range(len(signatures)))
    for i, sig in enumerate(signatures):
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())
            candidates.update(buckets[key])
            buckets[key].append(i)
        for j in sorted(candidates):
            if representative[j] == j and np.mean(signatures[j] == sig) >= threshold:
                representative[i] = j
                break
    return representative


def matches_any(query_signatures: np.ndarray, reference_signatures: np.ndarray, threshold: float, bands: int = 16) -> np.ndarray:
    """Boolean mask: which query rows are near-duplicates of at least one reference row."""
    rows_per_band = query_signatures.shape[1] // bands if len(query_signatures) else 1
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for j, sig in enumerate(reference_signatures):
        for band in range(bands):
            buckets[(band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())].append(j)
    mask = np.zeros(len(query_signatures), dtype=bool)
    for i, sig in enumerate(query_signatures):
        candidates: set[int] = set()
        for band in range(bands):
            candidates.update(buckets.get((band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes()), ()))
        mask[i] = any(np.mean(reference_signatures[j] == sig) >= threshold for j in candidates)
    return mask
