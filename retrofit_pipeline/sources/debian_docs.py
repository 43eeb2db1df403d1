"""Debian's translated manuals: technical documentation in many languages, as HTML.

Debian packages four DocBook manuals with their translations, as HTML (licences from the
packages' copyright files, usr/share/doc/<package>/copyright):

- Debian Reference, debian-reference-{en,de,es,fr,id,it,ja,pt,pt-br,zh-cn,zh-tw} (pt-br not by default):
  GPL-2+ (Osamu Aoki and translators). usr/share/debian-reference/<chapter>.<lang>.html
- The Debian GNU/Linux FAQ, debian-faq and debian-faq-{de,fr,it,ja,ko,nl,pt,ru,zh-cn}: a
  permission notice (copyright Software in the Public Interest) allowing verbatim and modified
  copies and translations under the same notice. usr/share/doc/debian/FAQ/<chapter>.en.html,
  FAQ/<lang>/<chapter>.<lang>.html
- The Debian Administrator's Handbook, debian-handbook (26 languages in one package):
  GPL-2.0+ or CC-BY-SA-3.0 (Raphaël Hertzog, Roland Mas). usr/share/doc/debian-handbook/html/<ll-CC>/<page>.html
- The Debian Installation Guide, installation-guide-amd64 (19 languages in one package): GPL-2
  (the Debian Installer team and contributors). usr/share/doc/installation-guide-amd64/<lang>/<page>.html

A section is a DocBook `section`/`sectN` block (chapters are not: their headings are
localized "Chapter N" labels): its heading (numbering removed) and its body paragraphs (not
those in lists, tables, notes, sidebars or code listings). Named anchors are made from the
English titles and are the same in every translation, so `collection:page#anchor` names a
section in every language. The pairs (domain "system-docs", source "debian-docs"):

- question_answering       a FAQ heading that is a question -> its answer's first paragraph
- title_retrieval          any other section heading -> the section's first paragraph
- inverse_cloze            first sentence of a paragraph -> the rest of it (up to 3 per section)
- cross_lingual_retrieval  English heading -> the aligned translated section's first paragraph

A pair's identity is its section's; its passage_identity names the paragraph itself
(`system-docs:<uid>#<n>`, the section's n-th paragraph as written), given only where the section
is aligned and has as many paragraphs as its English original: the translations are made
paragraph by paragraph, so there paragraph n is the same in every language, whichever paragraphs
the filtering rules below drop in one of them.

Held-out evaluation: whole sections, by a hash of their language-independent identity
(debian_manpages.is_evaluation_page), in every language; per language, each held-out section's
heading must find its first paragraph among the held-out first paragraphs.

Filtering rules, each counted in stats["dropped"]:
- code_block: code listings (`pre`) are never passages; command_paragraph: a paragraph mostly
  of inline code; code_fragment_paragraph: the two halves of a sentence a listing interrupts.
- short_paragraph: under MIN_PARAGRAPH_CHARS (MIN_CJK_PARAGRAPH_CHARS for CJK text).
- untranslated_paragraph: a translated paragraph equal (normalized) to an English paragraph of
  the same manual; partly_untranslated_paragraph: its words mostly those of one English
  paragraph of the same section (English left in place with a localized cross-reference).
- untranslated_heading: a translated heading equal to the English one, unless all its words
  occur in the translated passage (a name such as "sudo"); the section stays, without a query.
- section_without_passage, section_without_heading, duplicate_section.
- paragraph_also_held_out: a training section's paragraph that a held-out section of the same
  language repeats is not trained on.
- eval_ambiguous_query: a held-out heading that two held-out sections of one language share
  (normalized) names neither, so it is not a query (the passages stay in the corpus);
  eval_duplicate_passage: identical held-out first paragraphs are one document.
Training pairs with the same query text and language share a query_id (several positives).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..dedup import normalize_text
from ..schema import DataValidationError, EvaluationSet, derived_query_id, passage_identity, validate_evaluation_set, validate_pairs
from .debian_manpages import _split_first_sentence, _truncate, is_evaluation_page
from .registry import fetch_debian_packages

SOURCE_NAME = "debian-docs"
DOMAIN = "system-docs"
DEFAULT_EVAL_FRACTION = 0.3

# debian-reference-pt-br is left out: in 2.100 it is the pt translation again (about 90% of its
# paragraphs identical, in European Portuguese), so it would label pt text pt-br; the handbook has a
# real pt-BR translation. debian-reference-zh-tw is kept: a script conversion of zh-cn, but
# Traditional Chinese text (the handbook's zh-TW is a translation of its own).
DEFAULT_PACKAGES = [
    "debian-reference-en", "debian-reference-de", "debian-reference-es", "debian-reference-fr",
    "debian-reference-id", "debian-reference-it", "debian-reference-ja", "debian-reference-pt",
    "debian-reference-zh-cn", "debian-reference-zh-tw",
    "debian-faq", "debian-faq-de", "debian-faq-fr", "debian-faq-it", "debian-faq-ja", "debian-faq-ko",
    "debian-faq-nl", "debian-faq-pt", "debian-faq-ru", "debian-faq-zh-cn",
    "debian-handbook", "installation-guide-amd64",
]

# Where each manual lies in the unpacked tree.
_REFERENCE_DIR = Path("usr/share/debian-reference")
_FAQ_DIR = Path("usr/share/doc/debian/FAQ")
_HANDBOOK_DIR = Path("usr/share/doc/debian-handbook/html")
_INSTALL_GUIDE_DIR = Path("usr/share/doc/installation-guide-amd64")
_LANGUAGE_SUFFIXED_FILE_RE = re.compile(r"^(?P<page>[A-Za-z0-9_.-]+?)\.(?P<language>[a-z]{2}(?:-[a-z]{2})?)\.html$")

_SECTION_CLASSES = frozenset({"section", "sect1", "sect2", "sect3", "sect4", "sect5", "simplesect"})
# Containers whose paragraphs are not the section's running text.
_ASIDE_CLASSES = frozenset({
    "toc", "navheader", "navfooter", "docnav", "list-of-tables", "list-of-figures", "list-of-examples",
    "sidebar", "note", "warning", "tip", "caution", "important", "table", "informaltable", "figure",
    "informalfigure", "example", "informalexample", "footnote", "footnotes", "itemizedlist",
    "orderedlist", "variablelist", "calloutlist", "segmentedlist", "mediaobject", "screenshot",
    "url",  # the handbook's "→ https://..." link lines inside a paragraph
})
_ASIDE_TAGS = frozenset({"ul", "ol", "dl", "table", "blockquote", "nav", "header", "footer", "script", "style"})
_CODE_TAGS = frozenset({"code", "tt", "kbd", "samp"})
_CODE_SPAN_CLASSES = frozenset({"command", "userinput", "literal", "computeroutput", "screen"})
_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"})
_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# DocBook's generated ids ("idm186", "id-1.9.17.2") depend on the build: the installation guide's
# differ between translations (its named anchors do not), the handbook's are the same.
_GENERATED_ANCHOR_RE = re.compile(r"^(?:idm?\d+|id-[\d.]+)$")
# "2.1.1. ", "A.3. ", "12. " before a heading.
_HEADING_NUMBER_RE = re.compile(r"^\s*(?:[A-Z]\.(?:\d+\.)*|\d+(?:\.\d+)*\.)\s+")
_QUESTION_MARKS = ("?", "？", "؟")
_WHITESPACE_RE = re.compile(r"\s+")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
# A paragraph at least this long (CJK characters carry a word each) is a passage.
MIN_PARAGRAPH_CHARS = 60
MIN_CJK_PARAGRAPH_CHARS = 25
# A paragraph whose text is mostly inline code is a command listing, not prose.
MAX_CODE_SHARE = 0.6
MAX_CLOZE_PARAGRAPHS_PER_SECTION = 3
# A translated paragraph whose words are at least this much the words of one English paragraph
# of the same section (or page) is English left in place with a localized quote or cross-reference.
MAX_ENGLISH_WORD_SHARE = 0.8
_WORD_RE = re.compile(r"\w+")
# How a complete paragraph ends; one cut by a code listing ("... use the" [code] "command. It ...") does not.
_PARAGRAPH_ENDINGS = tuple(".!?:;…。！？：；)）»”\"'」』")


@dataclass(frozen=True)
class DocFile:
    collection: str  # "reference", "faq", "handbook", "install-guide"
    page: str  # file name without language and extension: the same page in every language
    language: str  # ISO 639-1 (with region where the manual has two variants: pt-br, zh-tw)
    path: Path


@dataclass
class Paragraph:
    text: str
    code_share: float  # the share of its characters in inline code (commands, literals)
    after_code: bool = False  # directly follows a code listing
    before_code: bool = False  # directly followed by (or holding) a code listing


@dataclass
class RawSection:
    """One section of one HTML page as written, before any filtering."""

    anchor: str | None
    parent_anchors: tuple[str, ...]
    heading: str = ""
    paragraphs: list[Paragraph] = field(default_factory=list)
    code_blocks: int = 0


@dataclass(frozen=True)
class Section:
    uid: str  # "reference:ch02#_package_configuration" (generated anchors: "...#idm186")
    split_key: str  # language-independent identity deciding train vs. evaluation
    aligned: bool  # whether uid names the same section in every language
    collection: str
    language: str
    heading: str
    passages: tuple[str, ...]  # kept paragraphs, in order
    path: str
    # Each passage's place among the section's paragraphs as written, where the section is aligned
    # and has as many paragraphs as its English original (paragraph n is the same in every
    # language); None elsewhere.
    paragraph_numbers: tuple[int, ...] | None = None


def iso_language(tag: str) -> str:
    """Debian's language tags (pt-BR, zh_CN, de-DE, zh-cn) as ISO 639-1: the region is kept only
    where it names a separate translation (pt-br, zh-tw); Simplified Chinese is plain "zh"."""
    tag = tag.strip().lower().replace("_", "-")
    if tag in ("zh-cn", "zh-hans"):
        return "zh"
    if tag in ("zh-tw", "zh-hant"):
        return "zh-tw"
    if tag == "pt-br":
        return "pt-br"
    return tag.split("-")[0]


def fetch_packages(packages: list[str], destination: Path) -> Path:
    """The packages downloaded and unpacked once; returns the root of the tree (usr/share/...)."""
    return fetch_debian_packages(packages, destination)


def discover_files(doc_root: Path) -> list[DocFile]:
    """Every HTML page of the manuals present under `doc_root`, with its language; symlinks
    (the FAQ's language-less aliases of the English pages) are skipped."""
    doc_root = Path(doc_root)
    files: list[DocFile] = []

    def add(collection: str, page: str, language: str, path: Path) -> None:
        if path.is_file() and not path.is_symlink():
            files.append(DocFile(collection, page, iso_language(language), path))

    for path in sorted((doc_root / _REFERENCE_DIR).glob("*.html")):
        match = _LANGUAGE_SUFFIXED_FILE_RE.match(path.name)
        if match:
            add("reference", match["page"], match["language"], path)
    faq = doc_root / _FAQ_DIR
    for path in sorted(faq.glob("*.en.html")):
        add("faq", path.name[: -len(".en.html")], "en", path)
    for directory in sorted(p for p in faq.glob("*") if p.is_dir() and p.name != "images"):
        for path in sorted(directory.glob(f"*.{directory.name}.html")):
            add("faq", path.name[: -len(f".{directory.name}.html")], directory.name, path)
    for collection, base in (("handbook", _HANDBOOK_DIR), ("install-guide", _INSTALL_GUIDE_DIR)):
        for directory in sorted(p for p in (doc_root / base).glob("*") if p.is_dir()):
            for path in sorted(directory.glob("*.html")):
                add(collection, path.stem, directory.name, path)
    return files


def read_html(path: Path) -> str:
    """The page as text; the manuals are UTF-8, so anything else is an error naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataValidationError(str(path), f"line {line}", "html",
                                  f"not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start})") from error


class _SectionParser(HTMLParser):
    """Collects DocBook sections: the heading, the anchor and the running-text paragraphs of each,
    with how much of each paragraph is inline code and how many code listings the section has."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[RawSection] = []
        self._stack: list[tuple[str, str]] = []  # (tag, role): role is section/aside/code/para/heading/""
        self._open_sections: list[RawSection] = []
        self._aside_depth = 0
        self._code_depth = 0
        self._pre_depth = 0
        self._heading: list[str] | None = None
        self._paragraph: list[tuple[str, bool]] | None = None  # (text, is_code) pieces
        self._paragraph_aside_depth = 0
        self._previous_block = ""  # the section's last body block: "para", "code" or "" (anything else)
        self._paragraph_after_code = False
        self._paragraph_has_code = False

    # -- element bookkeeping ------------------------------------------------------------------
    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        self._note_anchor(tag, attributes)
        if tag in _VOID_TAGS:
            return
        role = ""
        if tag == "div" and classes & _SECTION_CLASSES and not self._aside_depth:
            parents = tuple(s.anchor for s in self._open_sections if s.anchor)
            self._open_sections.append(RawSection(anchor=attributes.get("id"), parent_anchors=parents))
            role = "section"
            self._previous_block = ""
        elif tag == "pre":
            role = "pre"
            self._pre_depth += 1
            if self._open_sections and not self._aside_depth:
                section = self._open_sections[-1]
                section.code_blocks += 1
                if self._paragraph is None:
                    if self._previous_block == "para" and section.paragraphs:
                        section.paragraphs[-1].before_code = True
                    self._previous_block = "code"
                else:
                    self._paragraph_has_code = True  # the handbook puts listings inside paragraphs
        elif tag in _ASIDE_TAGS or (tag == "div" and classes & _ASIDE_CLASSES):
            role = "aside"
            self._aside_depth += 1
            if self._paragraph is None:
                self._previous_block = ""
        elif tag in _HEADING_TAGS and self._starts_heading():
            role = "heading"
            self._heading = []
        elif (tag == "p" or (tag == "div" and "para" in classes)) and self._starts_paragraph():
            role = "para"
            self._paragraph = []
            self._paragraph_aside_depth = self._aside_depth
            self._paragraph_after_code = self._previous_block == "code"
            self._paragraph_has_code = False
        elif tag in _CODE_TAGS or (tag == "span" and classes & _CODE_SPAN_CLASSES):
            role = "code"
            self._code_depth += 1
        self._stack.append((tag, role))

    def handle_startendtag(self, tag, attrs):
        # <a id="..."/> and <br/>: nothing is opened.
        self._note_anchor(tag, dict(attrs))

    def handle_endtag(self, tag):
        # Pop to the matching open element; a stray end tag is ignored (browsers do the same).
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                while len(self._stack) > index:
                    self._close(*self._stack.pop())
                return

    def close(self):
        super().close()
        while self._stack:
            self._close(*self._stack.pop())

    def handle_data(self, data):
        if self._pre_depth:
            return  # code listings are never passage text
        if self._heading is not None:
            self._heading.append(data)
        elif self._paragraph is not None and self._aside_depth == self._paragraph_aside_depth:
            self._paragraph.append((data, self._code_depth > 0))

    # -- helpers ------------------------------------------------------------------------------
    def _note_anchor(self, tag, attributes):
        if tag == "a" and self._heading is not None and self._open_sections:
            section = self._open_sections[-1]
            if section.anchor is None:
                section.anchor = attributes.get("id") or attributes.get("name")

    def _starts_heading(self) -> bool:
        if not self._open_sections or self._aside_depth or self._heading is not None or self._paragraph is not None:
            return False
        section = self._open_sections[-1]
        return not section.heading and not section.paragraphs

    def _starts_paragraph(self) -> bool:
        return bool(self._open_sections) and not self._aside_depth and self._paragraph is None and self._heading is None

    def _close(self, tag, role):
        if role == "section":
            section = self._open_sections.pop()
            self.sections.append(section)
        elif role == "aside":
            self._aside_depth -= 1
        elif role == "pre":
            self._pre_depth -= 1
        elif role == "code":
            self._code_depth -= 1
        elif role == "heading":
            text = _clean("".join(self._heading or []))
            self._heading = None
            if self._open_sections:
                self._open_sections[-1].heading = _HEADING_NUMBER_RE.sub("", text, count=1).strip()
        elif role == "para":
            pieces, self._paragraph = self._paragraph or [], None
            text = _clean("".join(piece for piece, _ in pieces))
            if text and self._open_sections:
                code_chars = sum(len(piece.strip()) for piece, is_code in pieces if is_code)
                total = sum(len(piece.strip()) for piece, _ in pieces) or 1
                self._open_sections[-1].paragraphs.append(Paragraph(
                    text, code_chars / total, after_code=self._paragraph_after_code, before_code=self._paragraph_has_code))
            self._previous_block = "para"


def _clean(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text).strip()


def parse_sections(html: str) -> list[RawSection]:
    """The sections of one DocBook HTML page, in document order of their end (children first)."""
    parser = _SectionParser()
    parser.feed(html)
    parser.close()
    return parser.sections


def _is_short(text: str) -> bool:
    if len(_CJK_RE.findall(text)) * 2 >= len(text):
        return len(text) < MIN_CJK_PARAGRAPH_CHARS
    return len(text) < MIN_PARAGRAPH_CHARS


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD_RE.findall(text.casefold()) if not w.isdigit())


def _is_mostly_english(text: str, english: list[frozenset[str]]) -> bool:
    words = _words(text)
    return len(words) >= 4 and any(len(words & e) >= MAX_ENGLISH_WORD_SHARE * len(words) for e in english)


def _is_cut_by_code(paragraph: Paragraph) -> bool:
    """The first part of a sentence that a code listing interrupts ("... use the" [code] "command.
    It ..."); the paragraph after the listing is the rest of it. Neither is a passage on its own."""
    return paragraph.before_code and not paragraph.text.endswith(_PARAGRAPH_ENDINGS)


def _heading_is_untranslated(heading: str, english_heading: str | None, first_passage: str) -> bool:
    """A heading equal to the English one is untranslated, unless it is a name the translation
    itself uses ("Knoppix", "sudo", "Kali Linux": all its words occur in the translated passage)."""
    if english_heading is None or normalize_text(heading) != english_heading:
        return False
    return not _words(heading) <= _words(first_passage)


def _is_question(heading: str) -> bool:
    return heading.rstrip().endswith(_QUESTION_MARKS)


def _is_named(anchor: str | None) -> bool:
    return anchor is not None and not _GENERATED_ANCHOR_RE.match(anchor)


def _identity(file: DocFile, raw: RawSection, ordinal: int, same_anchors_as_english: bool) -> tuple[str, str, bool]:
    """(uid, split key, aligned: whether the English section with this uid is this one's original).
    A named anchor is the same in every language. A generated one ("idm186") is the same only
    where the page has exactly the English page's anchors (the handbook's pages do, the
    installation guide's do not); such a section is held out with its nearest named ancestor
    (or its whole page), whose identity does not depend on the build."""
    prefix = f"{file.collection}:{file.page}"
    uid = f"{prefix}#{raw.anchor}" if raw.anchor else f"{prefix}#{ordinal}"
    if _is_named(raw.anchor):
        return uid, uid, True
    named = [a for a in raw.parent_anchors if _is_named(a)]
    split_key = f"{prefix}#{named[-1]}" if named else prefix
    return uid, split_key, file.language == "en" or (raw.anchor is not None and same_anchors_as_english)


def load_sections(files: list[DocFile], dropped: Counter) -> list[Section]:
    """Parses every page and keeps each section's usable heading and passages, counting what the
    filtering rules (module docstring) drop. English is parsed first: it is the reference for
    detecting untranslated text."""
    raw_by_file: list[tuple[DocFile, list[RawSection]]] = []
    ordered = sorted(files, key=lambda f: (f.language != "en", f.collection, f.language, f.page))
    for file in tqdm(ordered, desc="parse Debian manuals", leave=False, mininterval=2):
        raw_by_file.append((file, parse_sections(read_html(file.path))))

    # English text, to recognize untranslated text: exact (normalized) anywhere in the manual,
    # mostly the same words as a paragraph of the aligned section (else of the same page).
    english_paragraphs: dict[str, set[str]] = defaultdict(set)
    english_words_of_section: dict[str, list[frozenset[str]]] = defaultdict(list)
    english_words_of_page: dict[str, list[frozenset[str]]] = defaultdict(list)
    english_headings: dict[str, set[str]] = defaultdict(set)
    english_heading_of: dict[str, str] = {}
    english_anchors: dict[str, tuple] = {}
    english_paragraph_count: dict[str, int] = {}
    for file, raw_sections in raw_by_file:
        if file.language == "en":
            english_anchors[f"{file.collection}:{file.page}"] = tuple(raw.anchor for raw in raw_sections)
            for ordinal, raw in enumerate(raw_sections):
                uid = _identity(file, raw, ordinal, True)[0]
                english_paragraph_count.setdefault(uid, len(raw.paragraphs))  # a repeated uid: the first, as kept below
                for paragraph in raw.paragraphs:
                    english_paragraphs[file.collection].add(normalize_text(paragraph.text))
                    english_words_of_section[uid].append(_words(paragraph.text))
                    english_words_of_page[f"{file.collection}:{file.page}"].append(_words(paragraph.text))
                if raw.heading:
                    english_headings[file.collection].add(normalize_text(raw.heading))
                    english_heading_of[uid] = normalize_text(raw.heading)

    sections: list[Section] = []
    seen: set[tuple[str, str]] = set()
    for file, raw_sections in raw_by_file:
        translated = file.language != "en"
        same_anchors = english_anchors.get(f"{file.collection}:{file.page}") == tuple(raw.anchor for raw in raw_sections)
        for ordinal, raw in enumerate(raw_sections):
            uid, split_key, aligned = _identity(file, raw, ordinal, same_anchors)
            if (file.language, uid) in seen:
                dropped["duplicate_section"] += 1
                continue
            seen.add((file.language, uid))
            dropped["code_block"] += raw.code_blocks
            english_words = english_words_of_section[uid] if aligned else english_words_of_page[f"{file.collection}:{file.page}"]
            passages, numbers = [], []
            for index, paragraph in enumerate(raw.paragraphs):
                if paragraph.code_share > MAX_CODE_SHARE:
                    dropped["command_paragraph"] += 1
                elif _is_cut_by_code(paragraph) or (paragraph.after_code and index > 0 and _is_cut_by_code(raw.paragraphs[index - 1])):
                    dropped["code_fragment_paragraph"] += 1
                elif _is_short(paragraph.text):
                    dropped["short_paragraph"] += 1
                elif translated and normalize_text(paragraph.text) in english_paragraphs[file.collection]:
                    dropped["untranslated_paragraph"] += 1
                elif translated and _is_mostly_english(paragraph.text, english_words):
                    dropped["partly_untranslated_paragraph"] += 1
                else:
                    passages.append(paragraph.text)
                    numbers.append(index)
            if not passages:
                dropped["section_without_passage"] += 1
                continue
            heading = raw.heading
            english_heading = english_heading_of.get(uid) if aligned else (
                normalize_text(heading) if normalize_text(heading) in english_headings[file.collection] else None)
            if not heading:
                dropped["section_without_heading"] += 1
            elif translated and _heading_is_untranslated(heading, english_heading, passages[0]):
                dropped["untranslated_heading"] += 1
                heading = ""
            same_paragraphs = aligned and english_paragraph_count.get(uid) == len(raw.paragraphs)
            sections.append(Section(uid, split_key, aligned, file.collection, file.language, heading, tuple(passages), str(file.path),
                                    tuple(numbers) if same_paragraphs else None))
    return sections


def _heading_task(section: Section) -> str:
    return "question_answering" if section.collection == "faq" and _is_question(section.heading) else "title_retrieval"


def build_pairs(sections: list[Section]) -> pd.DataFrame:
    """Training pairs of the four task types from sections (of the training split). Rows with the
    same query text in the same language share a query_id: they are one query with several positives."""
    rows: list[dict] = []
    english = {s.uid: s for s in sections if s.language == "en" and s.aligned and s.heading}

    def add(task: str, section: Section, query: str, positive: str, query_language: str, index: int = 0) -> None:
        rows.append({
            "pair_id": f"{task}:{section.language}:{section.uid}:{index}",
            "query_id": derived_query_id(query_language, query),
            "query": query, "positive": _truncate(positive),
            "language": query_language, "passage_language": section.language,
            "task_type": task, "domain": DOMAIN, "source": SOURCE_NAME, "identity": section_identity(section, training=True),
            "passage_identity": paragraph_identity(section, index),  # the positive is (part of) passage `index`
        })

    for section in sections:
        if section.heading:
            add(_heading_task(section), section, section.heading, section.passages[0], section.language)
        for index, paragraph in enumerate(section.passages[:MAX_CLOZE_PARAGRAPHS_PER_SECTION]):
            split = _split_first_sentence(paragraph)
            if split:
                add("inverse_cloze", section, split[0], split[1], section.language, index)
        source = english.get(section.uid)
        if section.language != "en" and section.aligned and source is not None:
            add("cross_lingual_retrieval", section, source.heading, section.passages[0], "en")
    return pd.DataFrame(rows)


def section_identity(section: Section, training: bool = False) -> str | None:
    """The section in every language ("system-docs:reference:ch02#_anchor"), where its uid names
    the same section in every language. A section without such a uid has none for evaluation (no
    translation can be judged), and its named ancestor's for training, where the identity only
    keeps passages of one document from being each other's negatives."""
    if section.aligned:
        return f"{DOMAIN}:{section.uid}"
    return f"{DOMAIN}:{section.split_key}" if training else None


def paragraph_identity(section: Section, index: int) -> str | None:
    """The section's passage `index` in every language ("system-docs:reference:ch02#_anchor#1": its
    second paragraph as written), where the section is aligned paragraph by paragraph; else None."""
    if section.paragraph_numbers is None:
        return None
    return passage_identity(section_identity(section), section.paragraph_numbers[index])


def build_evaluation_set(sections: list[Section], dropped: Counter) -> EvaluationSet:
    """Per language: each held-out section's heading must find the section's first paragraph.
    A heading shared by two held-out sections of a language names neither, so it is dropped as a
    query (counted); identical first paragraphs are one document (the first) with both queries."""
    corpus_rows, query_rows, qrel_rows = [], [], []
    by_language: dict[str, list[Section]] = defaultdict(list)
    for section in sections:
        by_language[section.language].append(section)
    for language, members in sorted(by_language.items()):
        heading_counts = Counter(normalize_text(s.heading) for s in members if s.heading)
        doc_of_passage: dict[str, str] = {}
        for section in members:
            passage = _truncate(section.passages[0])
            doc_id = doc_of_passage.get(passage)
            if doc_id is None:
                doc_id = doc_of_passage[passage] = f"{language}:{section.uid}"
                corpus_rows.append({"doc_id": doc_id, "language": language, "domain": DOMAIN, "text": passage,
                                    "identity": section_identity(section)})
            else:
                dropped["eval_duplicate_passage"] += 1
            if not section.heading:
                continue
            if heading_counts[normalize_text(section.heading)] > 1:
                dropped["eval_ambiguous_query"] += 1
                continue
            query_id = f"q:{language}:{section.uid}"
            query_rows.append({"query_id": query_id, "language": language, "domain": DOMAIN, "text": section.heading,
                               "identity": section_identity(section), "task_type": _heading_task(section)})
            qrel_rows.append({"query_id": query_id, "doc_id": doc_id, "score": 1})
    qrels = pd.DataFrame(qrel_rows, columns=["query_id", "doc_id", "score"])
    return EvaluationSet(pd.DataFrame(corpus_rows), pd.DataFrame(query_rows), qrels)


def _without_held_out_paragraphs(train: list[Section], held_out: list[Section], dropped: Counter) -> list[Section]:
    """Training sections less the paragraphs that a held-out section of the same language also has
    (the Reference repeats a few paragraphs in two chapters), so no passage is on both sides."""
    held_out_paragraphs = {(s.language, p) for s in held_out for p in s.passages}
    kept = []
    for section in train:
        indexes = [i for i, p in enumerate(section.passages) if (section.language, p) not in held_out_paragraphs]
        dropped["paragraph_also_held_out"] += len(section.passages) - len(indexes)
        if indexes:
            numbers = section.paragraph_numbers
            kept.append(replace(section, passages=tuple(section.passages[i] for i in indexes),
                                paragraph_numbers=None if numbers is None else tuple(numbers[i] for i in indexes)))
    return kept


def _nested_counts(frame: pd.DataFrame, outer: str, inner: str) -> dict:
    return {key: group[inner].value_counts().sort_index().to_dict() for key, group in frame.groupby(outer)}


def build_debian_docs(spec: dict, cache_dir: Path) -> tuple[pd.DataFrame, EvaluationSet | None, dict]:
    """Spec keys: packages (default DEFAULT_PACKAGES), languages (ISO codes, default all found;
    English is always parsed, as the reference for alignment and untranslated text), eval_fraction
    (default DEFAULT_EVAL_FRACTION; 0 gives no evaluation set), held_out_collections (collections
    held out whole: faq, reference, handbook, install-guide), doc_root (an already unpacked tree
    instead of downloading the packages into cache_dir / "debian-docs")."""
    eval_fraction = float(spec.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    doc_root = spec.get("doc_root")
    if doc_root is None:
        doc_root = fetch_packages(list(spec.get("packages", DEFAULT_PACKAGES)), Path(cache_dir) / "debian-docs")
    doc_root = Path(doc_root)
    label = f"{SOURCE_NAME} ({doc_root})"
    files = discover_files(doc_root)
    if not files:
        raise DataValidationError(str(doc_root), "-", "-", "no Debian manual HTML pages found "
                                  "(expected usr/share/debian-reference, usr/share/doc/debian/FAQ, ...)")
    wanted = spec.get("languages")
    if wanted is not None:
        wanted = {iso_language(code) for code in wanted}
        files = [f for f in files if f.language in wanted or f.language == "en"]

    def is_output(language: str) -> bool:
        return wanted is None or language in wanted

    dropped: Counter = Counter()
    sections = load_sections(files, dropped)
    if not any(is_output(s.language) for s in sections):
        found = sorted({f.language for f in discover_files(doc_root)})
        raise DataValidationError(label, "-", "languages", f"no section with a usable paragraph in "
                                  f"{sorted(wanted) if wanted else 'any language'} (found: {found})")
    # A collection held out whole (e.g. the FAQ, for a leave-one-task-out score on its questions)
    # is on the evaluation side in every language; the rest by the hash of the section identity.
    held_out_collections = set(spec.get("held_out_collections", []))
    unknown = held_out_collections - {s.collection for s in sections}
    if unknown:
        raise DataValidationError(label, "-", "held_out_collections", f"no section of collection(s) {sorted(unknown)}; "
                                  f"found {sorted({s.collection for s in sections})}")
    held_out = [eval_fraction > 0 and (s.collection in held_out_collections or is_evaluation_page(s.split_key, eval_fraction))
                for s in sections]
    held_out_sections = [s for s, out in zip(sections, held_out) if out]
    train = _without_held_out_paragraphs([s for s, out in zip(sections, held_out) if not out], held_out_sections, dropped)
    pairs = build_pairs(train)
    if wanted is not None and not pairs.empty:
        pairs = pairs[pairs["passage_language"].isin(wanted)]
    pairs = validate_pairs(pairs.reset_index(drop=True), label)
    evaluation_sections = [s for s in held_out_sections if is_output(s.language)]
    # eval_fraction 0 asks for no held-out split (all sections train).
    evaluation = validate_evaluation_set(build_evaluation_set(evaluation_sections, dropped), label) if eval_fraction > 0 else None
    output = [s for s in sections if is_output(s.language)]
    section_frame = pd.DataFrame({"language": [s.language for s in output], "collection": [s.collection for s in output],
                                  "query": [bool(s.heading) for s in output]})
    stats = {
        "files": len(files),
        "sections_per_language": section_frame["language"].value_counts().sort_index().to_dict(),
        "sections_per_collection": _nested_counts(section_frame, "collection", "language"),
        "train_sections": sum(is_output(s.language) for s in train),
        "eval_sections": len(evaluation_sections),
        # Cross-lingual rows have English queries: they are counted under their passage's language.
        "pairs_per_passage_language_and_task": _nested_counts(pairs, "passage_language", "task_type"),
        "eval_queries_per_language": evaluation.queries["language"].value_counts().sort_index().to_dict() if evaluation else {},
        "eval_corpus_per_language": evaluation.corpus["language"].value_counts().sort_index().to_dict() if evaluation else {},
        # Sections with a heading query: the most eval queries a language allows (eval_fraction 1).
        "eval_capacity_per_language": section_frame[section_frame["query"]]["language"].value_counts().sort_index().to_dict(),
        # Counted over everything parsed (English is always parsed, as the reference).
        "dropped": dict(sorted(dropped.items())),
    }
    return pairs, evaluation, stats
