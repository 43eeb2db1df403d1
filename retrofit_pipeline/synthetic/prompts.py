"""Versioned prompt files (assets/prompts/synthetic_<type>.<version>.md): front matter (name,
version, task_type, reply: text | json), free notes, then `## system` and `## user` sections with
{{passage}}, {{passage_language}} and {{query_language}} placeholders. The file's content hash is
part of every cache key, so an edited prompt never reuses replies to the old one."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import REPO_ROOT
from .language_id import base_code

PROMPTS_DIR = REPO_ROOT / "assets" / "prompts"
REPLY_FORMATS = ("text", "json")

# English names for prompts; a code without one is named by its code.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "te": "Telugu", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh": "Chinese", "zh-tw": "Traditional Chinese", "pt-br": "Brazilian Portuguese",
}
_SECTION_RE = re.compile(r"^##\s+(system|user)\s*$", re.M)
_LABEL_RE = re.compile(r"^\s*(?:\*\*)?(?:question|query|keywords?|search query|answer|q|frage|anfrage|question posée|pregunta|вопрос)\s*[:：]\s*(?:\*\*)?\s*", re.I)
_NUMBERING_RE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_QUOTES = "\"'`“”„«»‘’「」"


def language_name(code: str) -> str:
    code = code.lower()
    return LANGUAGE_NAMES.get(code) or LANGUAGE_NAMES.get(base_code(code)) or code


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    task_type: str
    reply: str  # text | json
    system: str
    user: str
    sha256: str
    path: str

    def messages(self, passage: str, passage_language: str, query_language: str) -> list[dict]:
        values = {"passage": passage, "passage_language": language_name(passage_language), "query_language": language_name(query_language)}

        def fill(template: str) -> str:
            return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)

        messages = [{"role": "system", "content": fill(self.system)}] if self.system else []
        return messages + [{"role": "user", "content": fill(self.user)}]

    def parse(self, content: str) -> str:
        """The query in a reply; MalformedReply when there is none (see parse_reply)."""
        return parse_reply(content, self.reply)


def prompt_path(query_type: str, version: str, prompts_dir: str | Path | None = None) -> Path:
    directory = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    if not directory.is_absolute():
        directory = REPO_ROOT / directory
    return directory / f"synthetic_{query_type}.{version}.md"


def load_prompt(query_type: str, version: str, prompts_dir: str | Path | None = None) -> Prompt:
    path = prompt_path(query_type, version, prompts_dir)
    if not path.is_file():
        raise FileNotFoundError(f"prompt {path} does not exist (synthetic.prompt_version {version!r}, query type {query_type!r})")
    text = path.read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    if text.startswith("---\n"):
        end = text.index("\n---", 4)
        for line in text[4:end].splitlines():
            key, _, value = line.partition(":")
            meta[key.strip()] = value.strip()
        body = text[end + 4:]
    else:
        body = text
    parts = _SECTION_RE.split(body)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    problems = []
    if "user" not in sections or "{{passage}}" not in sections.get("user", ""):
        problems.append("a `## user` section with {{passage}} is required")
    reply = meta.get("reply", "text")
    if reply not in REPLY_FORMATS:
        problems.append(f"reply: {reply!r} (expected one of {REPLY_FORMATS})")
    unknown = set(re.findall(r"\{\{(\w+)\}\}", body)) - {"passage", "passage_language", "query_language"}
    if unknown:
        problems.append(f"unknown placeholder(s) {sorted(unknown)}")
    if problems:
        raise ValueError(f"prompt {path}: " + "; ".join(problems))
    return Prompt(name=meta.get("name", path.stem), version=meta.get("version", version), task_type=meta.get("task_type", f"synthetic_{query_type}"),
                  reply=reply, system=sections.get("system", ""), user=sections["user"], sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                  path=str(path))


def _strip_fences(content: str) -> str:
    content = content.strip()
    if content.startswith("```"):
        content = re.sub(r"^```[a-zA-Z]*\s*", "", content)
        content = re.sub(r"\s*```\s*$", "", content)
    return content.strip()


def parse_reply(content: str, reply: str = "text") -> str:
    """`text`: the first non-empty line, without a leading label ("Question:"), numbering or
    quotes. `json`: a JSON object whose "query" is non-empty text (code fences allowed). Anything
    else raises MalformedReply, which is counted and never cached."""
    from .llm_client import MalformedReply

    if reply == "json":
        try:
            data = json.loads(_strip_fences(content))
        except json.JSONDecodeError as error:
            raise MalformedReply(f"a JSON object was asked for, the reply is not JSON ({error.msg}): {content[:120]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("query"), str) or not data["query"].strip():
            raise MalformedReply(f"the JSON reply has no non-empty \"query\" field: {content[:120]!r}")
        return " ".join(data["query"].split())
    for line in _strip_fences(content).splitlines():
        line = _NUMBERING_RE.sub("", _LABEL_RE.sub("", line.strip())).strip().strip(_QUOTES).strip()
        if line:
            return " ".join(line.split())
    raise MalformedReply(f"the reply holds no query: {content[:120]!r}")
