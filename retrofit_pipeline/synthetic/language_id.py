"""Language identification for documents without a language and for generated queries.

py3langid (BSD-3-Clause; a maintained fork of langid.py: a naive Bayes model over byte n-grams,
140 labels, 4.6 MB wheel, pure Python + numpy) was chosen over lingua-language-detector (Apache-2.0,
75 languages, a Rust extension) after measuring both on this project's 2-core machine on 34 short
queries in 30 languages (docs/DATA_ENGINE.md): py3langid loads in 1 s, needs ~0.1 ms a text and
~140 MB of memory in all; lingua 16 s, ~1 ms and ~1.4 GB with its models preloaded, from a 96 MB
wheel, for one more correct answer (32/34 vs 31/34). Its weakness, closely related languages on
very short text (a 3-word French query read as Italian), is what `accepts` handles: a query is
accepted when the expected language is the best guess or still holds `min_probability` of the
probability mass (at 0.1: 33 of the 34 queries accepted as their own language; of the 198 tries of
a query against another language among de, fr, es, it, en and pt, one accepted: a Portuguese query
as Spanish).

Codes are ISO 639-1 (as schema.py checks); the model's few 3-letter labels (ary, arz, ...) are not
an answer a document can be filed under, and are reported as such."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

from ..schema import ISO_639_1

DEFAULT_MIN_PROBABILITY = 0.1


def base_code(language: str) -> str:
    """"pt-br" -> "pt", "zh-tw" -> "zh": the identifier knows languages, not regions or scripts."""
    return language.strip().lower().replace("_", "-").split("-")[0]


@dataclass(frozen=True)
class Guess:
    language: str  # the best label (ISO 639-1 where the model has one)
    probability: float  # its share of the probability mass
    expected_probability: float | None = None  # the expected language's share, when one was asked about


class LanguageIdentifier:
    """One py3langid model, loaded once per process; `identify` restricts the answer to candidate
    languages when given (a user's `languages:` list), which is how langid is meant to be used
    when the possible languages are known."""

    def __init__(self) -> None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier as _Model
        except ImportError as error:  # pragma: no cover - a dependency of the project
            raise ImportError("language identification needs py3langid (pip install py3langid)") from error
        self._model = _Model.from_model_file(MODEL_FILE, norm_probs=True)
        self._lock = threading.Lock()  # set_languages mutates the model

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(self._model.labels)

    def knows(self, language: str) -> bool:
        return base_code(language) in self.labels

    def rank(self, text: str, candidates: list[str] | None = None) -> list[tuple[str, float]]:
        """(label, probability) best first, over all labels or over the known candidates only."""
        with self._lock:
            if candidates:
                known = sorted({base_code(c) for c in candidates} & self.labels)
                if not known:
                    raise ValueError(f"none of the languages {sorted(candidates)} is known to the language identifier")
                self._model.set_languages(known)
            try:
                return [(label, float(p)) for label, p in self._model.rank(text)]
            finally:
                if candidates:
                    self._model.set_languages(None)

    def identify(self, text: str, candidates: list[str] | None = None, expected: str | None = None) -> Guess:
        ranked = self.rank(text, candidates)
        language, probability = ranked[0]
        expected_probability = None
        if expected is not None:
            expected_probability = dict(ranked).get(base_code(expected), 0.0)
        return Guess(language, probability, expected_probability)

    def accepts(self, text: str, expected: str, min_probability: float = DEFAULT_MIN_PROBABILITY) -> tuple[bool, Guess]:
        """Whether `text` reads as `expected`: its best guess, or within `min_probability` of the mass."""
        guess = self.identify(text, expected=expected)
        ok = guess.language == base_code(expected) or (guess.expected_probability or 0.0) >= min_probability
        return ok, guess

    def detect_document(self, text: str, candidates: list[str] | None = None) -> str | None:
        """The ISO 639-1 code of a document's text, or None when the best label is not one."""
        language = self.identify(text, candidates).language
        return language if language in ISO_639_1 else None


@lru_cache(maxsize=1)
def shared_identifier() -> LanguageIdentifier:
    return LanguageIdentifier()
