"""The configuration reference: every preset key with its type, default and meaning, read from the
configuration dataclasses (config.py and the settings classes it nests) and the comments on their
fields, so the reference cannot drift from the code. `scripts/config_reference.py` writes it to
docs/CONFIG.md; tests/test_config_reference.py fails when that file is out of date, when a field has
no comment, or when a shipped preset uses a key the reference does not know.

A field's meaning is the comment block directly above it (a group heading such as "Transport." is
part of its first field's) followed by the comment on its own line(s)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HEADER = """# Configuration reference

Every key a preset (`assets/presets/*.yaml`) may set, with its type, its default (what a preset that
omits the key gets) and its meaning. Generated from the configuration dataclasses by
`.venv/bin/python scripts/config_reference.py`; `tests/test_config_reference.py` fails when this
file is out of date. A preset may `extends:` another and override a few keys; an unknown key is an
error naming the file, the key and the closest valid one.
"""


@dataclass(frozen=True)
class ConfigKey:
    key: str  # dotted: "training.learning_rate"
    type: str  # the annotation, as written in the code
    default: str  # "required", or the default as YAML would spell it
    doc: str


def _section_classes() -> dict[str, type]:
    """Section name -> its settings dataclass: the PipelineConfig fields whose default is one."""
    from .config import PipelineConfig

    return {f.name: type(f.default_factory()) for f in dataclasses.fields(PipelineConfig)
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())}


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """Field name -> (annotation, comment text) for a dataclass, read from its source."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, str] = {}  # 1-based line -> comment text
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    body = ast.parse(source).body[0].body
    docs = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        own = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        docs[node.target.id] = (ast.unparse(node.annotation).strip("'\""), " ".join(above + own))
    return docs


def _spelled(value) -> str:
    """A default as a preset would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _keys_of(cls: type, prefix: str, skip: set[str], filled_by_loader: dict[str, str]) -> list[ConfigKey]:
    docs = field_docs(cls)
    entries = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if f.name in filled_by_loader:
            default = filled_by_loader[f.name]
        elif f.default is not dataclasses.MISSING:
            default = _spelled(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _spelled(f.default_factory())
        else:
            default = "required"
        annotation, doc = docs.get(f.name, ("", ""))
        entries.append(ConfigKey(prefix + f.name, annotation, default, doc))
    return entries


def reference() -> dict[str, list[ConfigKey]]:
    """Section ("top level" first) -> its keys, in the order the code declares them."""
    from .config import DEFAULT_ARTIFACTS_DIR, PipelineConfig

    sections = _section_classes()
    # source_file is set by load_config (where the preset was read from), never by a preset; the
    # dataclass has no default for artifacts_dir, load_config gives one.
    out = {"top level": _keys_of(PipelineConfig, "", set(sections) | {"source_file"},
                                 {"artifacts_dir": _spelled(DEFAULT_ARTIFACTS_DIR)})}
    for name, cls in sections.items():
        out[name] = _keys_of(cls, name + ".", set(), {})
    return out


def known_keys() -> set[str]:
    """Every dotted key the reference lists, and the section names themselves."""
    return {entry.key for entries in reference().values() for entry in entries} | set(_section_classes())


def preset_keys(raw: dict) -> list[str]:
    """The dotted keys a preset (after `extends`) sets: a section's keys one level down; a key whose
    value is a free-form mapping or list (raw_sources, training.lora, data_scales) is one key."""
    sections = set(_section_classes())
    keys = []
    for key, value in raw.items():
        if key in sections and isinstance(value, dict):
            keys.extend(f"{key}.{inner}" for inner in value)
        else:
            keys.append(key)
    return keys


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """docs/CONFIG.md's text."""
    parts = [HEADER]
    for section, entries in reference().items():
        cls_doc = ""
        if section != "top level":
            cls = _section_classes()[section]
            own = cls.__doc__ if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
            cls_doc = " ".join(own.split()) if own else ""
        parts.append(f"## {'Top level' if section == 'top level' else '`' + section + ':`'}\n")
        if cls_doc:
            parts.append(cls_doc + "\n")
        parts.append("| key | type | default | meaning |\n|:--|:--|:--|:--|")
        for entry in entries:
            parts.append(f"| `{entry.key}` | `{_cell(entry.type)}` | `{_cell(entry.default)}` | {_cell(entry.doc)} |")
        parts.append("")
    return "\n".join(parts)
