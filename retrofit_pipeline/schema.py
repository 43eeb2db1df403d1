"""The standard tables every source is turned into, and their validation.

Training pairs: one row per (query, positive passage) with its language, task type, domain and
source. `query_id` names the query: rows that share it are the same query with different
positives (MIRACL-style data has one row per positive), so none of them is a negative of another.
`domain` (man pages, encyclopedia, UI strings, ...) is what leave-one-domain-out evaluation holds
out. Both are derived when a source does not set them (query_id from the query's normalized text,
domain from the source name).
Evaluation sets: BEIR/MTEB-style corpus, queries and qrels, per language and domain.
Validation never drops rows silently: the first bad row stops the run with an error that names
the source, the row and the field.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

import pandas as pd

PAIR_COLUMNS = ["pair_id", "query_id", "query", "positive", "language", "passage_language", "task_type", "domain", "source"]
# Optional: a source's own hard negatives for a row (Mr. TyDi / MIRACL negative_passages), a list of texts.
GIVEN_NEGATIVES = "given_negatives"
CORPUS_COLUMNS = ["doc_id", "language", "domain", "text"]
QUERY_COLUMNS = ["query_id", "language", "domain", "text"]
QREL_COLUMNS = ["query_id", "doc_id", "score"]

# The task families of the paper's mixture (retrieval, QA, bitext, ...). A source labels every row.
TASK_TYPES = frozenset(
    {
        "summary_retrieval",  # short description -> document passage (title/abstract-style)
        "inverse_cloze",  # sentence -> the paragraph it was cut from
        "bitext",  # sentence -> its translation
        "cross_lingual_retrieval",  # query in one language -> passage in another
        "question_answering",  # natural question -> answer passage (NQ, MIRACL, Mr. TyDi, mMARCO, FAQs)
        "title_retrieval",  # a title or section heading -> the passage under it
    }
)

# ISO 639-1 codes. A region or script suffix is allowed (zh-cn, pt-br, sr-latn).
ISO_639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy
    da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy
    hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li
    ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa
    pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th
    ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu""".split()
)

# Characters that render as nothing; a text made only of them is empty.
_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"}


# A table with many bad rows reports this many in one error (and how many more there are).
MAX_REPORTED_PROBLEMS = 20


def _where(row: int | str) -> str:
    """ "line 4" as an editor numbers a text file's lines; "row 3" for a table's 0-based row."""
    return row if isinstance(row, str) and row.startswith("line ") else f"row {row}"


class DataValidationError(ValueError):
    """Bad input: names the source, the row and the field so the user can fix it; `more` lists
    further bad rows of the same source found in the same pass, as (row, field, problem)."""

    def __init__(self, source: str, row: int | str, field: str, problem: str, more: list[tuple] = (), total: int | None = None):
        self.source, self.row, self.field, self.problem, self.more = source, row, field, problem, list(more)
        message = f"{source}: {_where(row)}, field '{field}': {problem}"
        if self.more:
            total = total or 1 + len(self.more)
            message += f"\n{total} problems in all" + (f" (the first {1 + len(self.more)} shown)" if total > 1 + len(self.more) else "") + ":"
            message += "".join(f"\n  {_where(r)}, field '{f}': {p}" for r, f, p in [(row, field, problem), *self.more])
        super().__init__(message)


class _Problems:
    """Collects the bad rows of one pass so the user fixes a file once, not once per run."""

    def __init__(self, source: str, row_names: list | None = None):
        self.source, self.row_names, self.found = source, row_names, []  # found: (row index, field, problem)

    def check(self, check, *args):
        """The check's result, or None with its problem recorded (checks raise DataValidationError
        naming the 0-based row they were given)."""
        try:
            return check(*args)
        except DataValidationError as error:
            self.found.append((error.row, error.field, error.problem))
            return None

    def add(self, row: int, field: str, problem: str) -> None:
        self.found.append((row, field, problem))

    def raise_if_any(self) -> None:
        if not self.found:
            return
        ordered = sorted(self.found, key=lambda item: item[0])
        named = [(self.row_names[row] if self.row_names is not None else row, field, problem) for row, field, problem in ordered]
        (row, field, problem), more = named[0], named[1:MAX_REPORTED_PROBLEMS]
        raise DataValidationError(self.source, row, field, problem, more, total=len(named))


@dataclass(frozen=True)
class EvaluationSet:
    """Held-out retrieval data: corpus, queries and graded relevance judgements."""

    corpus: pd.DataFrame
    queries: pd.DataFrame
    qrels: pd.DataFrame

    @property
    def languages(self) -> list[str]:
        return sorted(self.queries["language"].unique())

    @property
    def domains(self) -> list[str]:
        return sorted(self.queries["domain"].unique())


def normalize_language(code: object, source: str, row: int | str, field: str = "language") -> str:
    if not isinstance(code, str) or not code.strip():
        raise DataValidationError(source, row, field, f"missing language code (got {code!r})")
    normalized = code.strip().lower().replace("_", "-")
    if normalized.split("-")[0] not in ISO_639_1:
        raise DataValidationError(source, row, field, f"unknown language code {code!r} (expected ISO 639-1, e.g. 'de', 'zh-cn')")
    return normalized


def is_blank(text: str) -> bool:
    return not "".join(ch for ch in text if ch not in _INVISIBLE).strip()


def _check_text(value: object, source: str, row: int | str, field: str) -> str:
    if not isinstance(value, str):
        raise DataValidationError(source, row, field, f"expected text, got {type(value).__name__} ({value!r})")
    if is_blank(value):
        raise DataValidationError(source, row, field, "empty or whitespace-only text")
    return unicodedata.normalize("NFC", value)


def _require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(source, "header", missing[0], f"missing column(s) {missing}; found {list(frame.columns)}")


def _check_unique(frame: pd.DataFrame, column: str, source: str) -> None:
    duplicated = frame[column].duplicated(keep="first")
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0])
        raise DataValidationError(source, row, column, f"duplicate id {frame[column].iloc[row]!r}")


def derived_query_id(language: str, query: str) -> str:
    """The query identity of a row whose source gives none: equal normalized texts are one query."""
    from .dedup import normalize_text

    return "q:" + hashlib.sha1(f"{language}\x1f{normalize_text(query)}".encode("utf-8")).hexdigest()[:16]


def validate_pairs(frame: pd.DataFrame, source: str, row_names: list | None = None) -> pd.DataFrame:
    """Checks a training-pair table and returns it NFC-normalized with canonical language codes
    (passage_language, domain and query_id are derived where a source leaves them out). Every bad
    row is found in one pass and reported together (`row_names`: how to name row i, e.g. the line
    of a jsonl file, "line 4"; default the 0-based row)."""
    same_language = "passage_language" not in frame.columns  # monolingual pairs: checked once, as language
    if same_language and "language" in frame.columns:
        frame = frame.assign(passage_language=frame["language"])
    if "domain" not in frame.columns and "source" in frame.columns:
        frame = frame.assign(domain=frame["source"])
    _require_columns(frame, [c for c in PAIR_COLUMNS if c != "query_id"], source)
    if frame.empty:
        raise DataValidationError(source, "-", "query", "the table has no rows")
    frame = frame.reset_index(drop=True).copy()
    if "query_id" not in frame.columns:
        frame["query_id"] = None
    frame = frame[PAIR_COLUMNS + ([GIVEN_NEGATIVES] if GIVEN_NEGATIVES in frame.columns else [])]
    problems = _Problems(source, row_names)
    for column in ("pair_id", "task_type", "domain", "source"):
        for row, value in enumerate(frame[column]):
            if not isinstance(value, str) or not value.strip():
                problems.add(row, column, f"missing value (got {value!r})")
    for row in frame["pair_id"].duplicated(keep="first").to_numpy().nonzero()[0]:
        problems.add(int(row), "pair_id", f"duplicate id {frame['pair_id'].iloc[row]!r}")
    frame["query"] = [problems.check(_check_text, v, source, r, "query") for r, v in enumerate(frame["query"])]
    frame["positive"] = [problems.check(_check_text, v, source, r, "positive") for r, v in enumerate(frame["positive"])]
    frame["language"] = [problems.check(normalize_language, v, source, r) for r, v in enumerate(frame["language"])]
    frame["passage_language"] = frame["language"] if same_language else [
        problems.check(normalize_language, v, source, r, "passage_language") for r, v in enumerate(frame["passage_language"])
    ]
    for row, value in enumerate(frame["task_type"]):
        if isinstance(value, str) and value.strip() and value not in TASK_TYPES:
            problems.add(row, "task_type", f"unknown task type {value!r}; known: {sorted(TASK_TYPES)}")
    if GIVEN_NEGATIVES in frame.columns:
        frame[GIVEN_NEGATIVES] = [
            [] if values is None or (isinstance(values, float) and values != values)  # None/NaN: the source gave none
            else [problems.check(_check_text, v, source, row, GIVEN_NEGATIVES) for v in values]
            for row, values in enumerate(frame[GIVEN_NEGATIVES])
        ]
    problems.raise_if_any()
    frame["query_id"] = [
        value if isinstance(value, str) and value.strip() else derived_query_id(language, query)
        for value, language, query in zip(frame["query_id"], frame["language"], frame["query"])
    ]
    return frame


def validate_evaluation_set(evaluation: EvaluationSet, source: str) -> EvaluationSet:
    """Checks ids, texts and languages, and that every query has a positive that exists in the corpus.
    A set without a domain column gets the source's label as its domain."""
    corpus, queries, qrels = evaluation.corpus, evaluation.queries, evaluation.qrels
    if "domain" not in corpus.columns:
        corpus = corpus.assign(domain=source)
    if "domain" not in queries.columns:
        queries = queries.assign(domain=source)
    _require_columns(corpus, CORPUS_COLUMNS, f"{source} (corpus)")
    _require_columns(queries, QUERY_COLUMNS, f"{source} (queries)")
    _require_columns(qrels, QREL_COLUMNS, f"{source} (qrels)")
    if corpus.empty:
        raise DataValidationError(f"{source} (corpus)", "-", "text", "the evaluation corpus is empty")
    corpus = corpus[CORPUS_COLUMNS].reset_index(drop=True).copy()
    queries = queries[QUERY_COLUMNS].reset_index(drop=True).copy()
    qrels = qrels[QREL_COLUMNS].reset_index(drop=True).copy()
    for name, frame, id_column in (("corpus", corpus, "doc_id"), ("queries", queries, "query_id")):
        label = f"{source} ({name})"
        frame[id_column] = frame[id_column].astype(str)
        _check_unique(frame, id_column, label)
        frame["text"] = [_check_text(v, label, r, "text") for r, v in enumerate(frame["text"])]
        frame["language"] = [normalize_language(v, label, r) for r, v in enumerate(frame["language"])]
        for row, value in enumerate(frame["domain"]):
            if not isinstance(value, str) or not value.strip():
                raise DataValidationError(label, row, "domain", f"missing value (got {value!r})")
    qrels["query_id"] = qrels["query_id"].astype(str)
    qrels["doc_id"] = qrels["doc_id"].astype(str)
    known_docs = set(corpus["doc_id"])
    for row, doc_id in enumerate(qrels["doc_id"]):
        if doc_id not in known_docs:
            raise DataValidationError(f"{source} (qrels)", row, "doc_id", f"document {doc_id!r} is not in the corpus")
    positive_queries = set(qrels.loc[qrels["score"] > 0, "query_id"])
    for row, query_id in enumerate(queries["query_id"]):
        if query_id not in positive_queries:
            raise DataValidationError(f"{source} (queries)", row, "query_id", f"query {query_id!r} has no positive passage in qrels")
    return EvaluationSet(corpus=corpus, queries=queries, qrels=qrels)


def validate_training_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """The trainer's input: query, positive and a list of negatives per row. A negative that is the
    row's own positive would teach the model to push the answer away, so it is an error."""
    _require_columns(frame, ["query", "positive", "negatives"], source)
    if frame.empty:
        raise DataValidationError(source, "-", "query", "the table has no rows")
    frame = frame.reset_index(drop=True).copy()
    frame["query"] = [_check_text(v, source, r, "query") for r, v in enumerate(frame["query"])]
    frame["positive"] = [_check_text(v, source, r, "positive") for r, v in enumerate(frame["positive"])]
    negatives = []
    for row, (positive, values) in enumerate(zip(frame["positive"], frame["negatives"])):
        if values is None or isinstance(values, str) or not hasattr(values, "__iter__"):
            raise DataValidationError(source, row, "negatives", f"expected a list of texts, got {type(values).__name__}")
        values = [_check_text(v, source, row, "negatives") for v in values]
        if positive in values:
            raise DataValidationError(source, row, "negatives", "a negative is the row's own positive passage")
        negatives.append(values)
    frame["negatives"] = negatives
    return frame
