"""A content-addressed cache of LLM replies under the cache directory (artifacts/.cache/llm, shared
by every experiment), one JSON file per request and server, written atomically:

    <key[:2]>/<key>/<server digest>.json

The key (`cache_key`) is the sha256 of everything a request says: the passage text and its
language (the prompt names it), the prompt (name, version and file hash), the requested model, the
query language and the generation parameters (seed included). Which server answered is not in the
key but in the file name inside the key's folder (a digest of base_url and the model the server
reports) and in the record itself: the same request to another server is another entry, and a run
without a server can still find every reply to a key (generate.usable_cached_replies decides which
it may use). Re-materializing, another experiment or partition, or a run after a crash asks
nothing twice. Only replies that parsed into a query are stored: a malformed reply, an error or a
timeout is never cached."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ..artifact_io import write_json
from .llm_client import ServerIdentity


def cache_key(passage: str, passage_language: str, prompt_name: str, prompt_version: str, prompt_sha256: str, model: str,
              query_language: str, parameters: dict) -> str:
    fields = {
        "passage_sha256": hashlib.sha256(passage.encode("utf-8")).hexdigest(), "passage_language": passage_language,
        "prompt": prompt_name, "prompt_version": prompt_version, "prompt_sha256": prompt_sha256,
        "model": model, "query_language": query_language, "parameters": parameters,
    }
    return _sha256(fields)


def _sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _read(path: Path) -> dict | None:
    """The stored record, or None (missing, or unreadable: then it is asked again and replaced)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("content"), str) else None


class ReplyCache:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def folder(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def path(self, key: str, server: ServerIdentity) -> Path:
        return self.folder(key) / f"{_sha256(asdict(server))[:16]}.json"

    def get(self, key: str, server: ServerIdentity) -> dict | None:
        """This server's reply to the request, or None."""
        return _read(self.path(key, server))

    def put(self, key: str, server: ServerIdentity, record: dict) -> None:
        write_json({**record, "server": asdict(server)}, self.path(key, server))

    def replies(self, key: str) -> dict[ServerIdentity, dict]:
        """Every stored reply to the request, by the server that wrote it (as its record names it)."""
        found = {}
        for path in sorted(self.folder(key).glob("*.json")):
            record = _read(path)
            server = record.get("server") if record else None
            if isinstance(server, dict) and isinstance(server.get("base_url"), str) and isinstance(server.get("model"), str):
                found[ServerIdentity(server["base_url"], server["model"])] = record
        return found

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*/*.json")) if self.directory.exists() else 0
