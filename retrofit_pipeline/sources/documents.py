"""A user's own documents as a source (`kind: documents`): a wiki export, manuals, tickets, with no
queries. The documents become passages, and the passages training pairs that need no LLM:

- title_retrieval  a document title or section heading -> the first passage under it
- inverse_cloze    one sentence of a passage (chosen by a hash of the passage) -> the rest of it
                   (Lee et al. 2019's inverse cloze task: the sentence is removed from its context)

The synthetic_queries asset (retrofit_pipeline/synthetic/) asks an LLM for queries of the same
passages (`training_passages`), when a preset configures one.

Input, `path:` (relative paths are relative to the repository, as the presets are):
- a folder: every .txt, .md/.markdown, .html/.htm, .jsonl and .parquet file under it (hidden files
  and other suffixes are skipped and counted). A directory named by a language code (`de/guide.md`)
  or a language suffix (`guide.de.md`) gives the file's language, and is left out of its identity,
  so the translations of one document are held out together.
- a .jsonl or .parquet file: one document per row, `text` required, `title`, `language` and
  `doc_id` optional (rows sharing a doc_id in different languages are translations of one document).
A file's language: a row's `language`, the folder or suffix, Markdown front matter (`language:` or
`lang:`), `<html lang=...>`, the spec's `language:`; else it is detected from the document's text by
py3langid (restricted to the spec's `languages:` when given; see synthetic/language_id.py).

Passages: paragraphs (blank-line separated; HTML `p`/`li`/`dd`/`blockquote`; Markdown code blocks,
tables and HTML comments skipped) packed in order, within a section, into windows of at most
`passage_tokens` tokens (whitespace words; a CJK character counts as one); a longer paragraph is cut
at sentence ends. A passage under `min_passage_chars` is dropped (counted).

Held-out split: whole documents by a hash of their identity (debian_manpages.is_evaluation_page,
`eval_fraction`, default 0.2), in every language. Per language, each held-out passage is queried once:
by its heading when it opens a titled section, else by its inverse-cloze sentence (the corpus then
holds the passage without that sentence, as training sees it); a query text that two held-out
passages of a language share names neither and is dropped (counted).

Identities: every pair carries its document's (`documents:<doc_id>`, the same in every language),
so no passage of a document is mined as another's negative. A passage's own identity
(`documents:<doc_id>#<section>.<passage>`: the pairs' passage_identity, and the evaluation's
identity, by which translations are judged relevant) is given only where the translations align:
every language version has as many sections, and that section's passages hold the same paragraphs
(whole ones, not a long paragraph's sentence windows), so passage n of the section is the same text
in every language. Elsewhere it is None: the evaluation then judges only the passage's own
language version (scored monolingually, not in the pooled and cross-lingual scopes).

Bad input is reported in one error listing every bad file and line (not UTF-8, unparsable JSON, a
row without text, a wrong type, an unknown or undetectable language, a duplicate doc_id); nothing is
returned, so nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..dedup import normalize_text
from ..schema import (
    ISO_639_1, MAX_REPORTED_PROBLEMS, DataValidationError, EvaluationSet, is_blank, passage_identity, validate_evaluation_set, validate_pairs,
)
from .debian_manpages import is_evaluation_page

SOURCE_NAME = "documents"
DOMAIN = "documents"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
TABLE_SUFFIXES = (".jsonl", ".parquet")
DEFAULT_EVAL_FRACTION = 0.2
DEFAULT_PASSAGE_TOKENS = 120
DEFAULT_MIN_PASSAGE_CHARS = 40
MAX_TITLE_CHARS = 150
MIN_CLOZE_SENTENCE_CHARS = 15
_SENTENCE_END_RE = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]")
_TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]|[^\s\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]+")
_WHITESPACE_RE = re.compile(r"\s+")
_MD_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKUP_RE = re.compile(r"(\*\*|__|\*|`|~~)")
_MD_LIST_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_LANGUAGE_SUFFIX_RE = re.compile(r"^(?P<stem>.+)\.(?P<language>[a-z]{2}(?:[-_][a-zA-Z]{2,4})?)$")


def _is_language_code(text: str) -> bool:
    return text.lower().replace("_", "-").split("-")[0] in ISO_639_1 and bool(re.fullmatch(r"[a-zA-Z]{2}(?:[-_][a-zA-Z]{2,4})?", text))


@dataclass
class RawDocument:
    """One document as read: its identity (shared by its translations), sections of paragraphs."""

    doc_id: str
    where: str  # "guide.md" or "faq.jsonl, line 3": how errors and passages name it
    language: str | None  # given, or None (detected later)
    title: str | None
    sections: list[tuple[str | None, list[str]]] = field(default_factory=list)  # (heading, paragraphs)

    @property
    def text(self) -> str:
        return "\n".join(p for _, paragraphs in self.sections for p in paragraphs)


@dataclass(frozen=True)
class Passage:
    passage_id: str  # "<doc_id>@<language>#<n>"
    doc_id: str
    language: str
    text: str
    heading: str | None  # the title or heading of the section it opens; None inside a section
    held_out: bool
    # "<section>.<passage in section>" where every language version of the document is laid out
    # alike there (_aligned_sections), so this names the same passage in each; else None.
    position: str | None = None


class _Problems:
    """Every bad file and line of one pass, reported together: (where, field, problem)."""

    def __init__(self, source: str) -> None:
        self.source, self.found = source, []

    def add(self, where: str, field_name: str, problem: str) -> None:
        self.found.append((where, field_name, problem))

    def raise_if_any(self) -> None:
        if self.found:
            raise DocumentsError(self.source, sorted(self.found, key=_problem_order))


def _problem_order(problem: tuple[str, str, str]) -> tuple:
    """By file, then by line/row number as a number (line 10 after line 9)."""
    file, _, rest = problem[0].partition(", ")
    number = re.search(r"\d+", rest)
    return file, int(number.group()) if number else -1


class DocumentsError(DataValidationError):
    """Bad documents: every bad file (and line) found in one pass, in one message."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]) -> None:
        (where, field_name, problem), more = problems[0], problems[1:]
        self.source, self.row, self.field, self.problem, self.more = source, where, field_name, problem, list(more)
        files = len({p[0].split(",")[0] for p in problems})
        shown = problems[:MAX_REPORTED_PROBLEMS]
        message = f"{source}: {len(problems)} problem(s) in {files} file(s)" + (f" (the first {len(shown)} shown)" if len(problems) > len(shown) else "") + ":"
        message += "".join(f"\n  {w}, field '{f}': {p}" for w, f, p in shown)
        ValueError.__init__(self, message)


# -- reading --------------------------------------------------------------------------------------
def _decode(data: bytes, where: str, problems: _Problems) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problems.add(f"{where}, line {line}", "text", f"not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start})")
        return None


def _clean(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text).strip()


def _blocks(text: str) -> list[str]:
    """Blank-line separated blocks, each joined to one line."""
    return [_clean(block) for block in re.split(r"\n\s*\n", text) if _clean(block)]


def _looks_like_title(block: str) -> bool:
    return "\n" not in block and len(block) <= MAX_TITLE_CHARS and not block.rstrip().endswith((".", "!", "?", "。", ":", ";", ","))


def parse_text(text: str) -> tuple[str | None, list[tuple[str | None, list[str]]], str | None]:
    """A plain-text file: its first block is the title when it is one short line without a final
    sentence mark and more text follows. Returns (title, sections, language given)."""
    raw_blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    title = None
    if len(raw_blocks) > 1 and _looks_like_title(raw_blocks[0]):
        title, raw_blocks = _clean(raw_blocks[0]), raw_blocks[1:]
    return title, [(None, [_clean(b) for b in raw_blocks])], None


def _front_matter(text: str) -> tuple[dict, str]:
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 4)
    if end < 0:
        return {}, text
    values = {}
    for line in text[4:end].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip().lower()] = value.strip().strip("'\"")
    return values, text[end + 4:].lstrip("-").lstrip("\n")


def _markdown_inline(text: str) -> str:
    text = _MD_LINK_RE.sub(lambda m: m.group(1), text)
    return _clean(_MD_MARKUP_RE.sub("", text))


def parse_markdown(text: str) -> tuple[str | None, list[tuple[str | None, list[str]]], str | None]:
    """Headings (#) open sections; the first level-1 heading (or front matter `title:`) is the title;
    code blocks, tables and HTML comments are not passage text; list items are joined per block."""
    meta, text = _front_matter(_HTML_COMMENT_RE.sub("", text))
    title = meta.get("title") or None
    language = meta.get("language") or meta.get("lang") or None
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    block: list[str] = []
    in_code = False

    def flush() -> None:
        if block:
            paragraph = _markdown_inline(" ".join(block))
            if paragraph:
                sections[-1][1].append(paragraph)
            block.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            flush()
            in_code = not in_code
            continue
        if in_code or stripped.startswith("|") or (line.startswith(("    ", "\t")) and not block):
            continue
        heading = _MD_HEADING_RE.match(stripped)
        if heading:
            flush()
            heading_text = _markdown_inline(heading.group(2))
            if len(heading.group(1)) == 1 and title is None and not any(p for _, p in sections):
                title = heading_text
                continue
            sections.append((heading_text, []))
            continue
        if not stripped:
            flush()
            continue
        block.append(_MD_LIST_RE.sub("", stripped.lstrip("> ")))
    flush()
    return title, [s for s in sections if s[1]], language


class _HtmlParser(HTMLParser):
    _SKIP = frozenset({"script", "style", "pre", "nav", "header", "footer", "noscript", "template", "svg"})
    _BLOCKS = frozenset({"p", "li", "dd", "dt", "blockquote", "td", "th", "figcaption"})
    _HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self.language: str | None = None
        self.sections: list[tuple[str | None, list[str]]] = [(None, [])]
        self._skip = 0
        self._in_title = False
        self._heading: tuple[str, list[str]] | None = None
        self._block: list[str] | None = None
        self._block_depth = 0
        self._page_title: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "html" and attributes.get("lang"):
            self.language = attributes["lang"]
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._HEADINGS and not self._skip:
            self._flush()
            self._heading = (tag, [])
        elif tag in self._BLOCKS and not self._skip and self._heading is None:
            if self._block is None:
                self._block, self._block_depth = [], 0
            self._block_depth += 1
        elif tag == "br" and self._block is not None:
            self._block.append(" ")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self._HEADINGS and self._heading is not None:
            level, parts = self._heading
            self._heading = None
            text = _clean("".join(parts))
            if not text:
                return
            if level == "h1" and self.title is None and not any(p for _, p in self.sections):
                self.title = text
            else:
                self.sections.append((text, []))
        elif tag in self._BLOCKS and self._block is not None:
            self._block_depth -= 1
            if self._block_depth <= 0:
                self._flush()

    def handle_data(self, data):
        if self._in_title:
            self._page_title.append(data)
        elif self._skip:
            return
        elif self._heading is not None:
            self._heading[1].append(data)
        elif self._block is not None:
            self._block.append(data)

    def _flush(self):
        if self._block is not None:
            text = _clean("".join(self._block))
            if text:
                self.sections[-1][1].append(text)
        self._block, self._block_depth = None, 0

    def result(self):
        self._flush()
        title = self.title or (_clean("".join(self._page_title)) or None)
        return title, [s for s in self.sections if s[1]], self.language


def parse_html(text: str) -> tuple[str | None, list[tuple[str | None, list[str]]], str | None]:
    parser = _HtmlParser()
    parser.feed(text)
    parser.close()
    return parser.result()


_PARSERS = {".txt": parse_text, ".md": parse_markdown, ".markdown": parse_markdown, ".html": parse_html, ".htm": parse_html}


def _identity_and_language(relative: Path) -> tuple[str, str | None]:
    """`de/guide.md` and `guide.de.md` -> ("guide.md", "de"); `notes/a.txt` -> ("notes/a.txt", None)."""
    language = None
    parts = []
    for part in relative.parent.parts:
        if language is None and _is_language_code(part):
            language = part
        else:
            parts.append(part)
    stem = relative.stem
    match = _LANGUAGE_SUFFIX_RE.match(stem)
    if match and _is_language_code(match["language"]):
        language = language or match["language"]
        stem = match["stem"]
    return "/".join([*parts, stem + relative.suffix]), language


def _read_text_file(path: Path, relative: Path, problems: _Problems) -> list[RawDocument]:
    text = _decode(path.read_bytes(), str(relative), problems)
    if text is None:
        return []
    identity, folder_language = _identity_and_language(relative)
    title, sections, given = _PARSERS[path.suffix.lower()](text)
    if not sections:
        problems.add(str(relative), "text", "no text (empty, or only markup / code)")
        return []
    return [RawDocument(doc_id=identity, where=str(relative), language=given or folder_language, title=title, sections=sections)]


def _table_rows(path: Path, relative: Path, problems: _Problems) -> list[tuple[str, dict]]:
    """(where, record) per row of a jsonl (by the line an editor shows) or parquet file (0-based row)."""
    rows: list[tuple[str, dict]] = []
    if path.suffix.lower() == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            problems.add(str(relative), "-", f"not a readable parquet file ({error})")
            return []
        if "text" not in frame.columns:
            problems.add(f"{relative}, header", "text", f"missing column 'text'; found {list(frame.columns)}")
            return []
        return [(f"{relative}, row {i}", record) for i, record in enumerate(frame.to_dict(orient="records"))]
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{relative}, line {number}"
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                problems.add(where, "-", f"not valid UTF-8 (byte {line[error.start]:#04x} at offset {error.start})")
                continue
            if not text.strip():
                continue  # a blank line (e.g. the file's last) holds no document
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                problems.add(where, "-", f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(record, dict):
                problems.add(where, "-", f"expected a JSON object, got {type(record).__name__}")
                continue
            rows.append((where, record))
    return rows


def _optional_text(record: dict, key: str, where: str, problems: _Problems) -> str | None:
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):
        return None
    if not isinstance(value, str):
        problems.add(where, key, f"expected text, got {type(value).__name__} ({value!r})")
        return None
    return value.strip() or None


def _read_table(path: Path, relative: Path, problems: _Problems) -> list[RawDocument]:
    documents = []
    for where, record in _table_rows(path, relative, problems):
        found = len(problems.found)
        text = record.get("text")
        if not isinstance(text, str):
            problems.add(where, "text", "missing" if text is None else f"expected text, got {type(text).__name__} ({text!r})")
            continue
        if is_blank(text):
            problems.add(where, "text", "empty or whitespace-only text")
            continue
        title = _optional_text(record, "title", where, problems)
        language = _optional_text(record, "language", where, problems)
        doc_id = record.get("doc_id")
        if doc_id is not None and not isinstance(doc_id, (str, int)):
            problems.add(where, "doc_id", f"expected text or a number, got {type(doc_id).__name__}")
        if len(problems.found) > found:
            continue  # a row with a bad field is reported, not half-used
        identity = f"{relative}:{doc_id}" if doc_id is not None else f"{where}"
        documents.append(RawDocument(doc_id=identity, where=where, language=language, title=title, sections=[(None, _blocks(text))]))
    return documents


def discover_files(root: Path) -> tuple[list[Path], list[str]]:
    """The readable files under `root` (or `root` itself) and the names of those skipped."""
    if root.is_file():
        return [root], []
    files, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in TEXT_SUFFIXES + TABLE_SUFFIXES:
            files.append(path)
        else:
            skipped.append(str(relative))
    return files, skipped


def read_documents(root: Path, label: str | None = None, problems: _Problems | None = None) -> tuple[list[RawDocument], dict]:
    """Every document under `root` (a folder or one table file). Bad input is collected into
    `problems` when given (the caller raises), else raised here as one DocumentsError."""
    root = Path(root)
    label = label or str(root)
    if not root.exists():
        raise DataValidationError(label, "-", "path", f"{root} does not exist (a folder of .txt/.md/.html files, or a .jsonl/.parquet file)")
    if root.is_file() and root.suffix.lower() not in TABLE_SUFFIXES + TEXT_SUFFIXES:
        raise DataValidationError(label, "-", "path", f"{root.name}: expected a folder, or a {'/'.join(TABLE_SUFFIXES + TEXT_SUFFIXES)} file")
    files, skipped = discover_files(root)
    collect = problems is not None
    problems = problems if collect else _Problems(label)
    documents: list[RawDocument] = []
    base = root.parent if root.is_file() else root
    for path in tqdm(files, desc="read documents", leave=False, mininterval=2):
        relative = path.relative_to(base)
        reader = _read_table if path.suffix.lower() in TABLE_SUFFIXES else _read_text_file
        documents.extend(reader(path, relative, problems))
    if not documents and not problems.found:
        problems.add(str(root), "-", f"no documents ({'/'.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files) found")
    if not collect:
        problems.raise_if_any()
    return documents, {"files": len(files), "skipped_files": skipped[:50], "skipped_file_count": len(skipped)}


# -- languages ------------------------------------------------------------------------------------
def assign_languages(documents: list[RawDocument], spec: dict, label: str, problems: _Problems | None = None) -> dict:
    """Fills in each document's language (given, or detected) and checks the codes and that no
    document is there twice in one language. Returns counts of given and detected languages."""
    collect = problems is not None
    problems = problems if collect else _Problems(label)
    candidates = spec.get("languages")
    forced = spec.get("language")
    identifier = None
    counts = Counter()
    for document in documents:
        language = document.language or forced
        if language is None:
            if identifier is None:
                from ..synthetic.language_id import shared_identifier

                identifier = shared_identifier()
            detected = identifier.detect_document(document.text, candidates)
            if detected is None:
                problems.add(document.where, "language", "language could not be detected as an ISO 639-1 code; give it (a `language` "
                             "field, a language folder such as de/, or the source's `language:`)")
                continue
            language = detected
            counts["detected"] += 1
        else:
            counts["given"] += 1
        normalized = str(language).strip().lower().replace("_", "-")
        if normalized.split("-")[0] not in ISO_639_1:
            problems.add(document.where, "language", f"unknown language code {language!r} (expected ISO 639-1, e.g. 'de', 'zh-cn')")
            continue
        document.language = normalized
    seen: dict[tuple[str, str], str] = {}
    for document in documents:
        key = (document.doc_id, document.language)
        if document.language is not None and key in seen:
            problems.add(document.where, "doc_id", f"a second document {document.doc_id!r} in language {document.language!r} "
                         f"(the first: {seen[key]}); give each its own doc_id, or the translation its own language")
        seen.setdefault(key, document.where)
    if not collect:
        problems.raise_if_any()
    return dict(counts)


# -- passages -------------------------------------------------------------------------------------
def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END_RE.split(text) if s.strip()]


def _join(parts: list[str]) -> str:
    out = ""
    for part in parts:
        if not out:
            out = part
        elif _CJK_RE.match(part[:1]) and _CJK_RE.match(out[-1:] or " "):
            out += part
        else:
            out += " " + part
    return out


def _windows(paragraph: str, max_tokens: int) -> list[str]:
    """A paragraph longer than max_tokens, cut at sentence ends (an overlong sentence by tokens)."""
    if count_tokens(paragraph) <= max_tokens:
        return [paragraph]
    pieces: list[str] = []
    for sentence in split_sentences(paragraph):
        tokens = _TOKEN_RE.findall(sentence)
        for start in range(0, len(tokens), max_tokens):
            pieces.append(_join(tokens[start:start + max_tokens]) if len(tokens) > max_tokens else sentence)
            if len(tokens) <= max_tokens:
                break
    return _pack_pieces(pieces, max_tokens)


def _pack(pieces: list[str], max_tokens: int) -> list[list[int]]:
    """Consecutive pieces grouped greedily into windows of at most max_tokens tokens (each window
    as the indexes of its pieces)."""
    windows, size = [], 0
    for index, piece in enumerate(pieces):
        tokens = count_tokens(piece)
        if not windows or size + tokens > max_tokens:
            windows.append([])
            size = 0
        windows[-1].append(index)
        size += tokens
    return windows


def _pack_pieces(pieces: list[str], max_tokens: int) -> list[str]:
    return [_join([pieces[i] for i in window]) for window in _pack(pieces, max_tokens)]


def section_windows(paragraphs: list[str], max_tokens: int) -> list[tuple[str, tuple[int, ...] | None]]:
    """Consecutive paragraphs packed into windows of at most max_tokens tokens, each with the
    paragraphs it holds (their indexes in the section), or None when it holds a piece of a
    paragraph cut at sentence ends: where a translation's cut falls is not known to match."""
    pieces, paragraph_of = [], []
    for number, paragraph in enumerate(paragraphs):
        windows = _windows(paragraph, max_tokens)
        pieces += windows
        paragraph_of += [number if len(windows) == 1 else None] * len(windows)
    packed = []
    for window in _pack(pieces, max_tokens):
        held = tuple(paragraph_of[i] for i in window)
        packed.append((_join([pieces[i] for i in window]), None if None in held else held))
    return packed


def section_passages(paragraphs: list[str], max_tokens: int) -> list[str]:
    """Consecutive paragraphs packed into windows of at most max_tokens tokens."""
    return [text for text, _ in section_windows(paragraphs, max_tokens)]


def _aligned_sections(layouts: list[list[list]]) -> set[int]:
    """The sections (indexes) where every language version of a document is laid out alike: all
    versions have as many sections, and this one's windows hold the same paragraphs in each."""
    if len({len(layout) for layout in layouts}) != 1:
        return set()
    return {index for index, section in enumerate(layouts[0]) if all(layout[index] == section for layout in layouts)}


def build_passages(documents: list[RawDocument], spec: dict) -> tuple[list[Passage], Counter]:
    max_tokens = int(spec.get("passage_tokens", DEFAULT_PASSAGE_TOKENS))
    min_chars = int(spec.get("min_passage_chars", DEFAULT_MIN_PASSAGE_CHARS))
    eval_fraction = float(spec.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    passages: list[Passage] = []
    dropped = Counter()
    windows_of = [[section_windows(paragraphs, max_tokens) for _, paragraphs in document.sections] for document in documents]
    layouts = defaultdict(list)  # doc_id -> per language version, per section, what each window holds
    for document, sections in zip(documents, windows_of):
        layouts[document.doc_id].append([[held for _, held in windows] for windows in sections])
    for document, sections in zip(documents, windows_of):
        held_out = is_evaluation_page(document.doc_id, eval_fraction)
        aligned = _aligned_sections(layouts[document.doc_id])
        number = 0
        for index, ((heading, _), windows) in enumerate(zip(document.sections, sections)):
            label = heading if heading is not None else (document.title if index == 0 else None)
            first = True
            # A window's place counts the short ones dropped, so a drop in one language shifts no other.
            for place, (text, held) in enumerate(windows):
                if len(text) < min_chars:
                    dropped["short_passage"] += 1
                    continue
                query_heading = label if first and label and normalize_text(label) != normalize_text(text) else None
                position = f"{index}.{place}" if index in aligned and held is not None else None
                passages.append(Passage(f"{document.doc_id}@{document.language}#{number}", document.doc_id, document.language, text,
                                        query_heading, held_out, position))
                number += 1
                first = False
    return passages, dropped


def cloze_split(passage: Passage) -> tuple[str, str] | None:
    """(sentence, rest): the sentence at a position chosen by a hash of the passage id, removed."""
    sentences = split_sentences(passage.text)
    if len(sentences) < 2:
        return None
    index = int(hashlib.sha1(passage.passage_id.encode("utf-8")).hexdigest()[:8], 16) % len(sentences)
    sentence = sentences[index]
    rest = _join(sentences[:index] + sentences[index + 1:])
    if len(sentence) < MIN_CLOZE_SENTENCE_CHARS or len(rest) < DEFAULT_MIN_PASSAGE_CHARS // 2:
        return None
    return sentence, rest


# -- pairs and evaluation ---------------------------------------------------------------------------
def build_pairs(passages: list[Passage], source: str, domain: str) -> pd.DataFrame:
    rows = []
    for passage in passages:
        if passage.held_out:
            continue
        identities = {"identity": document_identity(source, passage.doc_id), "passage_identity": aligned_passage_identity(source, passage)}
        if passage.heading:
            rows.append({"pair_id": f"{source}:title:{passage.passage_id}", "query": passage.heading, "positive": passage.text,
                         "language": passage.language, "task_type": "title_retrieval", **identities})
        split = cloze_split(passage)
        if split:
            # The positive is the passage less one sentence, chosen per language (cloze_split hashes
            # the language's passage id): the translations lack different sentences, the passage is the same.
            rows.append({"pair_id": f"{source}:cloze:{passage.passage_id}", "query": split[0], "positive": split[1],
                         "language": passage.language, "task_type": "inverse_cloze", **identities})
    frame = pd.DataFrame(rows, columns=["pair_id", "query", "positive", "language", "task_type", "identity", "passage_identity"])
    return frame.assign(passage_language=frame["language"], domain=domain, source=source)


def build_evaluation(passages: list[Passage], source: str, domain: str, dropped: Counter) -> EvaluationSet | None:
    corpus, queries = [], []
    for passage in (p for p in passages if p.held_out):
        text, query, task = passage.text, passage.heading, "title_retrieval"
        if query is None:
            split = cloze_split(passage)
            if split:
                (query, text), task = split, "inverse_cloze"
        # Judged by passage, not document: a query about one section is not answered by the others.
        identity = aligned_passage_identity(source, passage)
        corpus.append({"doc_id": passage.passage_id, "language": passage.language, "domain": domain, "text": text, "identity": identity})
        if query:
            queries.append({"query_id": f"{source}:q:{passage.passage_id}", "language": passage.language, "domain": domain,
                            "text": query, "doc_id": passage.passage_id, "identity": identity, "task_type": task})
    if not queries:
        return None
    frame = pd.DataFrame(queries)
    key = [f"{language}\x1f{normalize_text(text)}" for language, text in zip(frame["language"], frame["text"])]
    ambiguous = pd.Series(key).duplicated(keep=False).to_numpy()
    dropped["eval_ambiguous_query"] += int(ambiguous.sum())
    frame = frame[~ambiguous]
    if frame.empty:
        return None
    qrels = frame[["query_id", "doc_id"]].assign(score=1)
    return validate_evaluation_set(EvaluationSet(pd.DataFrame(corpus), frame.drop(columns="doc_id"), qrels), f"{source} (held out)")


def document_identity(source: str, doc_id: str) -> str:
    """A document in every language ("documents:guide.md"): its translations are the same document."""
    return f"{source}:{doc_id}"


def aligned_passage_identity(source: str, passage: Passage) -> str | None:
    """The passage in every language ("documents:guide.md#1.0": section 1, its first passage), where
    the document's translations align there (Passage.position); None elsewhere."""
    return passage_identity(document_identity(source, passage.doc_id), passage.position) if passage.position else None


def resolve_path(path: str | Path) -> Path:
    """Absolute, or relative to the repository (as the presets' other paths are)."""
    from ..config import REPO_ROOT

    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def load_passages(spec: dict) -> tuple[list[Passage], dict, Counter]:
    """The documents of a `kind: documents` spec as passages (both splits), with statistics."""
    if "path" not in spec:
        raise DataValidationError(f"raw source {spec.get('source', SOURCE_NAME)!r}", "-", "path", "a documents source needs `path:` (a folder or a .jsonl/.parquet file)")
    root = resolve_path(spec["path"])
    problems = _Problems(str(spec["path"]))
    documents, stats = read_documents(root, str(spec["path"]), problems)
    stats["languages_assigned"] = assign_languages(documents, spec, str(spec["path"]), problems)
    problems.raise_if_any()  # every bad file and line of both passes, in one error
    passages, dropped = build_passages(documents, spec)
    stats["documents"] = len(documents)
    return passages, stats, dropped


def training_passages(spec: dict) -> pd.DataFrame:
    """The training split's passages (what the synthetic_queries asset generates queries for):
    passage_id, identity, passage_identity, language, text, source, domain."""
    passages, _, _ = load_passages(spec)
    source = spec.get("source", SOURCE_NAME)
    rows = [{"passage_id": f"{source}:{p.passage_id}", "identity": document_identity(source, p.doc_id),
             "passage_identity": aligned_passage_identity(source, p), "language": p.language, "text": p.text}
            for p in passages if not p.held_out]
    columns = ["passage_id", "identity", "passage_identity", "language", "text"]
    return pd.DataFrame(rows, columns=columns).assign(source=source, domain=spec.get("domain", DOMAIN))


def build_documents_source(spec: dict, cache_dir: Path) -> tuple[pd.DataFrame, EvaluationSet | None, dict]:
    """Training pairs (title_retrieval, inverse_cloze), the held-out documents' evaluation set and
    statistics of a `kind: documents` source."""
    source = spec.get("source", SOURCE_NAME)
    domain = spec.get("domain", DOMAIN)
    passages, stats, dropped = load_passages(spec)
    pairs = build_pairs(passages, source, domain)
    if pairs.empty:
        raise DataValidationError(str(spec["path"]), "-", "text", f"no training pairs: {len(passages)} passages, "
                                  f"{sum(p.held_out for p in passages)} held out; add documents with headings or passages of two sentences or more")
    evaluation = build_evaluation(passages, source, domain, dropped)
    pairs = validate_pairs(pairs, source)
    stats.update({
        "passages": len(passages),
        "held_out_documents": len({p.doc_id for p in passages if p.held_out}),
        "training_documents": len({p.doc_id for p in passages if not p.held_out}),
        "pairs_by_task": pairs.groupby("task_type").size().to_dict(),
        "passages_by_language": Counter(p.language for p in passages),
        "evaluation_queries": 0 if evaluation is None else len(evaluation.queries),
        "dropped": dict(dropped),
    })
    stats["passages_by_language"] = dict(stats["passages_by_language"])
    return pairs, evaluation, stats
