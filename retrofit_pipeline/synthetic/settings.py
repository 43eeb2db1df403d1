"""The preset's `synthetic:` section: off unless `enabled: true` (the default preset generates
nothing, and its asset graph has no synthetic_queries asset). docs/DATA_ENGINE.md explains each
key; the API key itself never goes into a preset, only the NAME of the environment variable."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..schema import ISO_639_1

# query type (preset) -> task type of its pairs (schema.TASK_TYPES)
QUERY_TYPES = {
    "question": "synthetic_question",
    "keywords": "synthetic_keywords",
    "cross_lingual": "synthetic_cross_lingual",
}
SECRET_KEYS = ("api_key", "key", "token", "secret", "password")


@dataclass
class SyntheticSettings:
    """LLM-written queries for passages (the synthetic_queries asset; docs/DATA_ENGINE.md)."""

    enabled: bool = False  # add the synthetic_queries asset; its kept pairs join the training pool
    # The endpoint: an OpenAI-compatible server (vLLM, llama.cpp server, Ollama, TGI, `transformers
    # serve`). base_url usually ends in /v1. Replies are cached per server: base_url and the model
    # the server reports (GET /v1/models), shown as `server` ("<model> @ <base_url>") in the metadata.
    # Without base_url, only cached replies are used: an item with none is skipped and counted
    # (not_cached); an item cached from several servers is used only when cached_server names one
    # of them (else skipped, counted as cached_by_several_servers).
    base_url: str | None = None
    model: str | None = None  # the name requests give (part of the cache key)
    cached_server: str | None = None  # without base_url: use only this server's replies, "<model> @ <base_url>"
    api_key_env: str | None = None  # the NAME of the environment variable holding the key
    # Which passages get queries: raw sources by name (`source:` of a raw_sources entry, or its
    # kind); a documents source gives its training passages, any other its pairs' positives.
    passage_sources: list[str] = field(default_factory=lambda: ["documents"])
    passages_per_language: int = 100  # drawn by seed per passage language
    min_passage_chars: int = 80  # shorter passages get no query (counted)
    # What is asked for, per passage: question | keywords | cross_lingual.
    query_types: list[str] = field(default_factory=lambda: ["question", "keywords", "cross_lingual"])
    query_language: str | None = None  # None: the passage's language (question, keywords)
    cross_lingual_languages: list[str] = field(default_factory=lambda: ["en"])  # a passage in one of them asks for another
    prompt_version: str = "v1"  # assets/prompts/synthetic_<type>.<version>.md
    prompts_dir: str | None = None  # default assets/prompts
    # Generation parameters (part of the cache key).
    max_tokens: int = 64  # tokens the LLM may write per reply
    temperature: float = 0.0  # sampling temperature (0: greedy)
    top_p: float | None = None  # nucleus sampling (None: the server's default)
    seed: int = 13  # passage sampling; also sent to the server (and part of the cache key)
    # Transport.
    concurrency: int = 4  # requests in flight at once
    timeout_s: float = 60.0  # seconds per request before it counts as failed
    max_retries: int = 3  # retries of a failed request (timeouts, 429, 5xx)
    backoff_s: float = 1.0  # first retry's wait in seconds, doubled each retry (with jitter; a Retry-After is honoured)
    max_failed_requests: int = 20  # more failed requests (after retries) than this stop the run
    # Budget per run (cache hits are free): None is unlimited.
    max_requests: int | None = None  # HTTP requests sent (every attempt, retries too; cache hits are free)
    max_total_tokens: int | None = None  # prompt + reply tokens the server reports, summed over the run
    # Filters, in this order; each drop is counted in the asset's metadata.
    min_query_chars: int = 8  # shorter queries are dropped (counted)
    max_query_chars: int = 300  # longer queries are dropped (counted)
    copy_ngram: int = 3  # word n-grams (characters for CJK/Thai text)
    max_copy_overlap: float = 0.5  # share of the query's n-grams found in its passage
    language_filter: bool = True  # drop a query not in the language asked for (a language identifier decides)
    min_language_probability: float = 0.1  # see synthetic/language_id.py
    round_trip_top_k: int | None = 3  # the source passage must rank within top-k of the pool (None: off)
    round_trip_pool_per_language: int = 2000  # pool passages per language (the selected ones always in)

    def validate(self) -> None:
        if not self.enabled:
            return
        unknown = sorted(set(self.query_types) - set(QUERY_TYPES))
        if unknown or not self.query_types:
            raise ValueError(f"synthetic.query_types: unknown {unknown or 'empty list'}; known: {sorted(QUERY_TYPES)}")
        if not self.model:
            raise ValueError("synthetic.model is required when synthetic.enabled (it is part of the cache key)")
        if self.cached_server and self.base_url:
            raise ValueError("synthetic.cached_server chooses among cached replies when there is no base_url; with base_url "
                             "only that server's replies are used: set one of the two")
        languages = {"query_language": self.query_language}
        languages.update({f"cross_lingual_languages[{i}]": value for i, value in enumerate(self.cross_lingual_languages)})
        for name, value in languages.items():
            if value is not None and str(value).lower().split("-")[0] not in ISO_639_1:
                raise ValueError(f"synthetic.{name}: unknown language code {value!r} (ISO 639-1)")
        if "cross_lingual" in self.query_types and not self.cross_lingual_languages:
            raise ValueError("synthetic.cross_lingual_languages must name at least one language for query type cross_lingual")
        for name in ("passages_per_language", "max_tokens", "concurrency", "copy_ngram", "min_query_chars", "max_query_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic.{name} must be at least 1")
        if self.round_trip_top_k is not None and self.round_trip_top_k < 1:
            raise ValueError("synthetic.round_trip_top_k must be at least 1, or null to turn the round-trip filter off")
        if not 0 < self.max_copy_overlap <= 1:
            raise ValueError("synthetic.max_copy_overlap must be in (0, 1]")


def reject_secrets(section: dict | None, preset: str) -> None:
    """A key in a preset ends up in git and in Dagster's run records: refuse it by name."""
    for name in SECRET_KEYS:
        if section and name in section:
            raise ValueError(f"config {preset}: synthetic.{name}: a secret never goes into a preset; put it in an environment "
                             "variable and name the variable in synthetic.api_key_env")
