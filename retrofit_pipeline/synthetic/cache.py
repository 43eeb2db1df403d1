"""A content-addressed cache of LLM replies: one JSON file per key under the cache directory
(artifacts/.cache/llm, shared by every experiment), written atomically. The key is the sha256 of
the passage text, the prompt (name, version and file hash), the model, the query language and the
generation parameters: re-materializing, another experiment or partition, or a run after a crash
asks nothing twice. Only replies that parsed into a query are stored: a malformed reply, an error
or a timeout is never cached."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..artifact_io import write_json


def cache_key(passage: str, prompt_name: str, prompt_version: str, prompt_sha256: str, model: str, query_language: str,
              parameters: dict) -> str:
    fields = {
        "passage_sha256": hashlib.sha256(passage.encode("utf-8")).hexdigest(),
        "prompt": prompt_name, "prompt_version": prompt_version, "prompt_sha256": prompt_sha256,
        "model": model, "query_language": query_language, "parameters": parameters,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class ReplyCache:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored record, or None (missing, or unreadable: then it is asked again and replaced)."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("content"), str) else None

    def put(self, key: str, record: dict) -> None:
        write_json(record, self.path(key))

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json")) if self.directory.exists() else 0
