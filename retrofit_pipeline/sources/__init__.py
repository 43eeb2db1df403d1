"""Raw sources by kind: each returns standard-schema training pairs, and some a held-out
evaluation set. `load_raw_sources` combines them as the config lists them."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd

from ..schema import IDENTITY, MAX_REPORTED_PROBLEMS, PASSAGE_IDENTITY, DataValidationError, EvaluationSet, validate_evaluation_set, validate_pairs
from . import huggingface

LOCAL_PAIR_SUFFIXES = (".jsonl", ".parquet")
SOURCE_KINDS = ("debian_manpages", "debian_docs", "gettext_catalogs", "wikipedia_summaries", "hf_pairs", "hf_tydi", "hf_parallel", "hf_retrieval", "local_pairs", "documents")


def _field_holding_bad_bytes(line: bytes) -> str:
    """Which JSON field of an undecodable line holds the bad bytes (decoded leniently to find it)."""
    try:
        record = json.loads(line.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return "-"
    if isinstance(record, dict):
        for key, value in record.items():
            if "\ufffd" in str(value):
                return str(key)
    return "-"


def read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; every undecodable, unparsable or blank line is reported (by the
    line number an editor shows, in one error) rather than silently lost."""
    records, problems = [], []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"line {number}"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.append((where, _field_holding_bad_bytes(line), f"not valid UTF-8 (byte {line[error.start]:#04x} at offset {error.start})"))
                continue
            if not text.strip():
                problems.append((where, "-", "blank line (one JSON object per line expected)"))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                problems.append((where, "-", f"not valid JSON ({error.msg} at column {error.colno})"))
                continue
            if not isinstance(record, dict):
                problems.append((where, "-", f"expected a JSON object, got {type(record).__name__}"))
                continue
            records.append(record)
    if problems:
        (row, field, problem), more = problems[0], problems[1:MAX_REPORTED_PROBLEMS]
        raise DataValidationError(str(path), row, field, problem, more, total=len(problems))
    return pd.DataFrame.from_records(records)


def _derive_ids(frame: pd.DataFrame, source: str, task_type: str) -> pd.DataFrame:
    """A user's own pairs need only query, positive and language: the source is the entry's name
    (or the file's), the task type the entry's (default question_answering, as for hf_pairs), the
    pair id a hash of the row's content."""
    if "source" not in frame.columns:
        frame = frame.assign(source=source)
    if "task_type" not in frame.columns:
        frame = frame.assign(task_type=task_type)
    if "pair_id" not in frame.columns and {"query", "positive", "language"} <= set(frame.columns):
        content = frame["query"].astype(str) + "\x1f" + frame["positive"].astype(str) + "\x1f" + frame["language"].astype(str)
        frame = frame.assign(pair_id=[f"{source}:" + hashlib.sha1(c.encode("utf-8")).hexdigest()[:16] for c in content])
    return frame


def read_local_pairs(path: Path, source: str | None = None, task_type: str = "question_answering") -> pd.DataFrame:
    """A standard-schema file (jsonl or parquet), e.g. dropped into the incoming directory; pair_id
    and source are derived when missing (see _derive_ids). Bad rows are named by the line an
    editor shows for jsonl, by their 0-based row for parquet."""
    path = Path(path)
    source = source or path.stem
    if path.suffix == ".jsonl":
        frame = _derive_ids(read_jsonl(path), source, task_type)
        return validate_pairs(frame, str(path), row_names=[f"line {i + 1}" for i in range(len(frame))])
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataValidationError(str(path), "-", "-", f"not a readable parquet file ({error})") from error
    return validate_pairs(_derive_ids(frame, source, task_type), str(path))


def incoming_files(directory: Path | None) -> list[Path]:
    if directory is None or not Path(directory).is_dir():
        return []
    return sorted(p for p in Path(directory).iterdir() if p.suffix in LOCAL_PAIR_SUFFIXES and p.is_file())


def load_source(spec: dict, cache_dir: Path) -> tuple[pd.DataFrame, EvaluationSet | None, dict]:
    """One configured source's pairs, its held-out evaluation split (if it has one) and statistics.
    A `domain:` in the spec relabels the source's rows and evaluation data."""
    pairs, evaluation, stats = _load_source_kind(spec, cache_dir)
    if spec.get("domain"):
        pairs = pairs.assign(domain=spec["domain"])
        if evaluation is not None:
            evaluation = EvaluationSet(evaluation.corpus.assign(domain=spec["domain"]), evaluation.queries.assign(domain=spec["domain"]), evaluation.qrels)
    return pairs, evaluation, stats


def _load_source_kind(spec: dict, cache_dir: Path) -> tuple[pd.DataFrame, EvaluationSet | None, dict]:
    kind = spec.get("kind")
    if kind == "debian_manpages":
        from .debian_manpages import DEFAULT_PACKAGES, build_manpage_corpus, fetch_packages

        man_root = spec.get("man_root")
        if man_root is None:
            man_root = fetch_packages(spec.get("packages", DEFAULT_PACKAGES), cache_dir / "debian-manpages")
        return build_manpage_corpus(Path(man_root), spec.get("languages"), float(spec.get("eval_fraction", 0.2)))
    if kind == "gettext_catalogs":
        from .gettext_catalogs import build_gettext_catalogs

        return build_gettext_catalogs(spec, cache_dir)
    if kind == "debian_docs":
        from .debian_docs import build_debian_docs

        return build_debian_docs(spec, cache_dir)
    if kind == "wikipedia_summaries":
        from .wikipedia_summaries import build_wikipedia_summaries

        return build_wikipedia_summaries(spec, cache_dir)
    if kind == "hf_pairs":
        return huggingface.load_hf_pairs(spec), None, {}
    if kind == "hf_tydi":
        return huggingface.load_hf_tydi(spec), None, {}
    if kind == "hf_parallel":
        return huggingface.load_hf_parallel(spec), None, {}
    if kind == "hf_retrieval":
        retrieval = huggingface.load_hf_retrieval(spec)
        return huggingface.retrieval_to_pairs(retrieval, spec.get("source", "hf_retrieval")), None, {}
    if kind == "documents":
        from .documents import build_documents_source

        return build_documents_source(spec, cache_dir)
    if kind == "local_pairs":
        return read_local_pairs(Path(spec["path"]), spec.get("source"), spec.get("task_type", "question_answering")), None, {}
    raise ValueError(f"raw source kind {kind!r} is not known; use one of {', '.join(SOURCE_KINDS)}")


def combine_evaluation_sets(sets: list[EvaluationSet], label: str) -> EvaluationSet:
    combined = EvaluationSet(
        corpus=pd.concat([s.corpus for s in sets], ignore_index=True),
        queries=pd.concat([s.queries for s in sets], ignore_index=True),
        qrels=pd.concat([s.qrels for s in sets], ignore_index=True),
    )
    return validate_evaluation_set(combined, label)


def restrict_evaluation(evaluation: EvaluationSet, languages: list[str] | None, domains: list[str] | None = None) -> EvaluationSet:
    """The evaluation set limited to the configured languages and domains; a configured language or
    domain without any evaluation query is an error, not a row that silently disappears."""
    queries, corpus = evaluation.queries, evaluation.corpus
    for field, wanted in (("language", languages), ("domain", domains)):
        if not wanted:
            continue
        missing = sorted(set(wanted) - set(queries[field]))
        if missing:
            raise DataValidationError("evaluation sources", "-", f"evaluation.{field}s",
                                      f"no evaluation queries for {missing}; the evaluation data has {sorted(queries[field].unique())}")
        queries, corpus = queries[queries[field].isin(wanted)], corpus[corpus[field].isin(wanted)]
    qrels = evaluation.qrels[evaluation.qrels["query_id"].isin(queries["query_id"])]
    return EvaluationSet(corpus.reset_index(drop=True), queries.reset_index(drop=True), qrels.reset_index(drop=True))


def load_sources(specs: list[dict], cache_dir: Path) -> list[tuple[pd.DataFrame, EvaluationSet | None, dict]]:
    """load_source of every spec, in order. Sources are independent and their parsing is pure
    Python (one core each), so with several cores they load side by side in worker processes
    (spawned: the caller may hold threads, e.g. torch's). Specs of one kind stay in one worker, in
    order, since they may share a download cache."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(len({spec.get("kind") for spec in specs}), cores)
    if workers < 2:
        return _load_in_order(specs, cache_dir)
    by_kind: dict[object, list[int]] = {}
    for position, spec in enumerate(specs):
        by_kind.setdefault(spec.get("kind"), []).append(position)
    results: list = [None] * len(specs)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {kind: pool.submit(_load_in_order, [specs[i] for i in positions], cache_dir) for kind, positions in by_kind.items()}
            for kind, positions in by_kind.items():
                for position, loaded in zip(positions, futures[kind].result()):
                    results[position] = loaded
    except BrokenProcessPool as error:  # a source's own errors arrive as themselves; this is the workers dying
        warnings.warn(f"loading sources in worker processes failed ({error}); loading them one after another instead. "
                      "A script that loads sources needs an `if __name__ == '__main__':` guard for worker processes.", stacklevel=2)
        return _load_in_order(specs, cache_dir)
    return results


def _load_in_order(specs: list[dict], cache_dir: Path) -> list:
    return [load_source(spec, cache_dir) for spec in specs]


def load_raw_sources(
    raw_specs: list[dict], evaluation_specs: list[dict], cache_dir: Path, incoming_dir: Path | None = None
) -> tuple[pd.DataFrame, EvaluationSet, dict]:
    """All training pairs (with duplicate pair ids rejected across sources) and the evaluation set:
    the configured evaluation sources if any, else the held-out splits the raw sources provide."""
    frames, held_out, stats = [], [], {}
    for spec, (pairs, evaluation, source_stats) in zip(raw_specs, load_sources(raw_specs, cache_dir)):
        frames.append(pairs)
        if evaluation is not None:
            held_out.append(evaluation)
        stats[spec.get("source", spec.get("kind"))] = {"rows": len(pairs), **source_stats}
    for path in incoming_files(incoming_dir):
        frames.append(read_local_pairs(path))
        stats[f"incoming:{path.name}"] = {"rows": len(frames[-1])}
    if not frames:
        raise ValueError("no raw sources configured (raw_sources is empty)")
    pairs = validate_pairs(pd.concat(frames, ignore_index=True), "raw sources (combined)")
    for column in (IDENTITY, PASSAGE_IDENTITY):  # no source names documents (or passages): every row is its own
        if column not in pairs.columns:
            pairs[column] = None
    if evaluation_specs:
        held_out = [huggingface.load_hf_retrieval(spec) for spec in evaluation_specs]
    if not held_out:
        raise ValueError("no evaluation data: configure evaluation.sources or a raw source with a held-out split")
    return pairs, combine_evaluation_sets(held_out, "evaluation sources"), stats
