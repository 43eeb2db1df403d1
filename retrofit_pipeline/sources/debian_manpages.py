"""The shipped offline default: real multilingual text from Debian's translated manual pages.

Debian packages the Linux man-pages project and the manpages-l10n / JM / CMPP translations
(manpages, manpages-dev, manpages-de, manpages-ru, manpages-ja, manpages-zh, ...; GPL and
Linux man-pages copyleft licences, see README). The same page exists in many languages, which
gives natural training and evaluation pairs:

- summary_retrieval        NAME one-liner ("list directory contents") -> first DESCRIPTION paragraph
- inverse_cloze            first sentence of a later DESCRIPTION paragraph -> the rest of it
- bitext                   NAME one-liner in language X -> the same page's one-liner in English
- cross_lingual_retrieval  English one-liner -> the DESCRIPTION paragraph in language X

Pages are split into train and evaluation by a hash of the page name (e.g. "open.2"), so no
page, in any language, is on both sides.

A pair's identity is its page's ("manpages:open.2"); its passage_identity names the positive
itself: the English NAME one-liner of bitext rows ("manpages:open.2#NAME"), or a DESCRIPTION
paragraph ("manpages:open.2#DESCRIPTION.1") where the page's DESCRIPTION has as many paragraphs as
the English page's. Translations are made paragraph by paragraph, but a translated page can be of
another upstream version than the English one, which a different paragraph count shows: there it
is None.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..dedup import normalize_text
from ..schema import EvaluationSet, passage_identity, validate_evaluation_set, validate_pairs
from .groff import ParsedManPage, parse_man, read_page
from .registry import fetch_debian_packages

SOURCE_NAME = "debian-manpages"
DOMAIN = "manpages"  # software reference manuals

# man directory -> ISO 639-1 code. zh_TW is left out: it is a script conversion of zh_CN.
MAN_DIRECTORIES = {
    "": "en", "de": "de", "fr": "fr", "es": "es", "it": "it", "pl": "pl",
    "ru": "ru", "uk": "uk", "ja": "ja", "zh_CN": "zh",
}
DEFAULT_PACKAGES = [
    "manpages", "manpages-dev",
    "manpages-de", "manpages-de-dev", "manpages-fr", "manpages-fr-dev", "manpages-es", "manpages-es-dev",
    "manpages-it", "manpages-it-dev", "manpages-pl", "manpages-pl-dev", "manpages-ru", "manpages-ru-dev",
    "manpages-uk", "manpages-uk-dev", "manpages-ja", "manpages-ja-dev", "manpages-zh",
]
# Localized headings of the DESCRIPTION section, as the translations spell them.
_DESCRIPTION_HEADINGS = (
    "DESCRIPTION", "BESCHREIBUNG", "DESCRIPCIÓN", "DESCRIZIONE", "OPIS", "ОПИСАНИЕ", "ОПИС",
    "説明", "解説", "描述", "説明と解説",
)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_NAME_DASH_RE = re.compile(r"\s[-\u2013\u2014]\s")
_PAGE_FILE_RE = re.compile(r"^(?P<name>.+)\.(?P<section>[0-9][a-z0-9]*)(\.gz)?$")
MAX_PASSAGE_CHARS = 600


@dataclass(frozen=True)
class ManPage:
    key: str  # "open.2": the same key in every language
    language: str
    summary: str
    paragraphs: tuple[str, ...]
    path: str
    # Each paragraph's place among the DESCRIPTION's paragraphs as parsed (short ones are not kept),
    # and how many those are: what aligns a paragraph with the English page's (paragraph_identity).
    paragraph_numbers: tuple[int, ...] = ()
    description_paragraphs: int = 0


def fetch_packages(packages: list[str], destination: Path) -> Path:
    """The packages' man pages, downloaded and unpacked once (see registry.fetch_debian_packages)."""
    return fetch_debian_packages(packages, destination) / "usr" / "share" / "man"


def _page_files(man_root: Path, directory: str) -> list[Path]:
    base = man_root / directory if directory else man_root
    return sorted(p for p in base.glob("man*/*") if p.is_file() and _PAGE_FILE_RE.match(p.name))


def _find_description(sections):
    """The DESCRIPTION section: an exact heading first (Ukrainian "КОРОТКИЙ ОПИС" is the synopsis,
    "ОПИС" the description), then a heading that contains one ("SYNOPSIS ET DESCRIPTION", "DESCRIPTION 描述")."""
    headings = [s.heading.strip().upper() for s in sections]
    for wanted in (lambda h: h in _DESCRIPTION_HEADINGS, lambda h: any(d in h for d in _DESCRIPTION_HEADINGS)):
        for section, heading in zip(sections, headings):
            if wanted(heading):
                return section
    return None


def _to_man_page(parsed: ParsedManPage, key: str, language: str, path: Path) -> ManPage | None:
    if parsed.redirect is not None or not parsed.sections:
        return None
    name_text = " ".join(parsed.sections[0].paragraphs)
    # "ls - list directory contents": the summary follows the first dash (an em dash in some translations).
    match = _NAME_DASH_RE.search(name_text)
    summary = name_text[match.end():].strip() if match else ""
    description = _find_description(parsed.sections[1:])
    parsed_paragraphs = description.paragraphs if description else []
    numbers = tuple(n for n, p in enumerate(parsed_paragraphs) if len(p) >= 20)
    if not summary:
        return None
    return ManPage(key=key, language=language, summary=summary, paragraphs=tuple(parsed_paragraphs[n] for n in numbers), path=str(path),
                   paragraph_numbers=numbers, description_paragraphs=len(parsed_paragraphs))


def load_manpages(man_root: Path, languages: list[str] | None = None) -> list[ManPage]:
    """Parses every page of the configured languages; link pages ('.so') are skipped as aliases."""
    man_root = Path(man_root)
    if not man_root.is_dir():
        raise FileNotFoundError(f"man page root {man_root} does not exist")
    pages: list[ManPage] = []
    for directory, language in MAN_DIRECTORIES.items():
        if languages is not None and language not in languages:
            continue
        files = _page_files(man_root, directory)
        for path in tqdm(files, desc=f"parse man pages [{language}]", leave=False, mininterval=2):
            match = _PAGE_FILE_RE.match(path.name)
            key = f"{match['name']}.{match['section']}"
            try:
                text = read_page(path)
            except (UnicodeDecodeError, LookupError, OSError) as error:
                raise ValueError(f"{path}: cannot be read as text ({error})") from error
            page = _to_man_page(parse_man(text), key, language, path)
            if page is not None:
                pages.append(page)
    return pages


def _truncate(text: str, limit: int = MAX_PASSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sentence_end = max(cut.rfind(". "), cut.rfind("。"))
    return cut[: sentence_end + 1] if sentence_end > limit // 2 else cut.rsplit(" ", 1)[0]


def _split_first_sentence(paragraph: str) -> tuple[str, str] | None:
    parts = _SENTENCE_END_RE.split(paragraph, maxsplit=1)
    if len(parts) != 2:
        return None
    first, rest = parts[0].strip(), parts[1].strip()
    if len(first) < 15 or len(rest) < 40:
        return None
    return first, rest


def is_evaluation_page(key: str, eval_fraction: float) -> bool:
    digest = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < eval_fraction


def build_pairs(pages: list[ManPage]) -> pd.DataFrame:
    """Training pairs of the four task types from pages (of the training split)."""
    rows: list[dict] = []
    english = {p.key: p for p in pages if p.language == "en"}

    def add(task: str, page: ManPage, query: str, positive: str, query_language: str, index: int = 0) -> None:
        rows.append({
            "pair_id": f"{task}:{page.language}:{page.key}:{index}",
            "query": query, "positive": _truncate(positive),
            "language": query_language, "passage_language": page.language,
            "task_type": task, "domain": DOMAIN, "source": SOURCE_NAME, "identity": page_identity(page.key),
            "passage_identity": paragraph_identity(page, english.get(page.key), index),  # the positive is (part of) paragraph `index`
        })

    for page in pages:
        if page.paragraphs:
            add("summary_retrieval", page, page.summary, page.paragraphs[0], page.language)
        for index, paragraph in enumerate(page.paragraphs[1:4], start=1):
            split = _split_first_sentence(paragraph)
            if split:
                add("inverse_cloze", page, split[0], split[1], page.language, index)
        source_page = english.get(page.key)
        if page.language != "en" and source_page is not None:
            if source_page.summary != page.summary:
                rows.append({
                    "pair_id": f"bitext:{page.language}:{page.key}:0",
                    "query": page.summary, "positive": source_page.summary,
                    "language": page.language, "passage_language": "en",
                    "task_type": "bitext", "domain": DOMAIN, "source": SOURCE_NAME, "identity": page_identity(page.key),
                    "passage_identity": passage_identity(page_identity(page.key), "NAME"),  # the English one-liner
                })
            if page.paragraphs:
                add("cross_lingual_retrieval", page, source_page.summary, page.paragraphs[0], "en")
    return pd.DataFrame(rows)


def page_identity(key: str) -> str:
    """A page in every language ("manpages:open.2"): its translations are the same document."""
    return f"{DOMAIN}:{key}"


def paragraph_identity(page: ManPage, english: ManPage | None, index: int) -> str | None:
    """The page's DESCRIPTION paragraph `index` in every language ("manpages:ls.1#DESCRIPTION.1"),
    where the DESCRIPTION has as many paragraphs as the English page's (module docstring); else None."""
    if english is None or index >= len(page.paragraph_numbers) or page.description_paragraphs != english.description_paragraphs:
        return None
    return passage_identity(page_identity(page.key), f"DESCRIPTION.{page.paragraph_numbers[index]}")


def build_evaluation_set(pages: list[ManPage], dropped: Counter | None = None) -> EvaluationSet:
    """Per language: each held-out page's one-liner must find that page's DESCRIPTION paragraph.
    Alias pages with identical text would make two "correct" documents: the first is kept. A
    one-liner that two kept pages of a language share (normalized) names neither, so it is no query
    (counted as eval_ambiguous_query; the passages stay in the corpus)."""
    dropped = Counter() if dropped is None else dropped
    kept: list[ManPage] = []
    seen_docs: set[tuple[str, str]] = set()
    for page in pages:
        if not page.paragraphs:
            continue
        passage = _truncate(page.paragraphs[0])
        if (page.language, passage) in seen_docs:
            dropped["eval_duplicate_passage"] += 1
            continue
        seen_docs.add((page.language, passage))
        kept.append(page)
    summaries = Counter((page.language, normalize_text(page.summary)) for page in kept)
    corpus_rows, query_rows, qrel_rows = [], [], []
    for page in kept:
        doc_id = f"{page.language}:{page.key}"
        identity = page_identity(page.key)
        corpus_rows.append({"doc_id": doc_id, "language": page.language, "domain": DOMAIN, "text": _truncate(page.paragraphs[0]),
                            "identity": identity})
        if summaries[(page.language, normalize_text(page.summary))] > 1:
            dropped["eval_ambiguous_query"] += 1
            continue
        query_rows.append({"query_id": f"q:{doc_id}", "language": page.language, "domain": DOMAIN, "text": page.summary,
                           "identity": identity, "task_type": "summary_retrieval"})
        qrel_rows.append({"query_id": f"q:{doc_id}", "doc_id": doc_id, "score": 1})
    return EvaluationSet(pd.DataFrame(corpus_rows), pd.DataFrame(query_rows), pd.DataFrame(qrel_rows))


def build_manpage_corpus(
    man_root: Path, languages: list[str] | None, eval_fraction: float
) -> tuple[pd.DataFrame, EvaluationSet, dict]:
    pages = load_manpages(man_root, languages)
    if not pages:
        raise ValueError(f"{man_root}: no man pages with a NAME line found for languages {languages}")
    train_pages = [p for p in pages if not is_evaluation_page(p.key, eval_fraction)]
    eval_pages = [p for p in pages if is_evaluation_page(p.key, eval_fraction)]
    pairs = validate_pairs(build_pairs(train_pages), f"{SOURCE_NAME} ({man_root})")
    dropped: Counter = Counter()
    evaluation = validate_evaluation_set(build_evaluation_set(eval_pages, dropped), f"{SOURCE_NAME} ({man_root})")
    stats = {
        "pages_parsed": len(pages),
        "train_pages": len(train_pages),
        "eval_pages": len(eval_pages),
        "dropped": dict(sorted(dropped.items())),
        "pages_per_language": pd.Series([p.language for p in pages]).value_counts().sort_index().to_dict(),
    }
    return pairs, evaluation, stats
