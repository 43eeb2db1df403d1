"""Scores a checkpoint on OFFICIAL mteb tasks, chosen by name or by benchmark, so the numbers
compare with the MTEB leaderboard.

Source: mteb's own task registry (`mteb.get_task`, `mteb.get_benchmark`); the tasks are run
unchanged by `mteb.evaluate`, and the results are written in mteb's result format (a ResultCache
folder: results/<model>/<revision>/<Task>.json, read by `mteb.load_results` / `TaskResult.from_disk`).
Licence: every task's dataset keeps its own licence (`task.metadata.license`); nothing is
redistributed here. Yields no training pairs: one score row per task, subset and split.

Where a task's data comes from (each task pins a Hugging Face dataset `path` at a `revision`):
- the hub, when it is reachable (datasets downloads the pinned revision);
- offline (HF_HUB_OFFLINE=1), the local `datasets` cache filled by an earlier online run (that
  cache does not record the revision: the latest cached copy is used);
- a local snapshot of the dataset repository, named per task in `overrides`
  ({"MIRACLRetrieval": "/data/mteb-MIRACLRetrieval"}): the folder exactly as the hub holds it
  (README.md whose `configs:` name the subsets, and their data files), e.g. made by
  `hf download mteb/MIRACLRetrieval --repo-type dataset --revision <pinned> --local-dir <dir>`.
  The folder replaces metadata.dataset["path"] for the run only, so mteb's own loader reads it
  (`datasets.load_dataset(<dir>, "<subset>-corpus", ...)`); the pinned revision is kept in the
  results, and is checked against the download record `hf download` leaves in <dir>/.cache.
"""

from __future__ import annotations

import copy
import difflib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
from tqdm.auto import tqdm

from .artifact_io import atomic_directory
from .evaluation import MTEB_LANGUAGES, REPORTED_METRICS
from .schema import DataValidationError

logger = logging.getLogger(__name__)

CONFIG_SOURCE = "evaluation config"
# mteb's type for text retrieval, the leaderboard's "Retrieval" column (not Reranking or Any2AnyRetrieval).
RETRIEVAL_TASK_TYPES = ("Retrieval",)
# Where `hf download --local-dir` records the commit each file came from (first line of the file).
DOWNLOAD_RECORD = Path(".cache") / "huggingface" / "download" / "README.md.metadata"


class OfficialDataUnavailableError(FileNotFoundError):
    """An official task's data could not be loaded; the message says how to provide it."""


@dataclass(frozen=True)
class DataSource:
    """Where one task's data is read from, for the score table."""

    description: str
    local_path: Path | None
    revision_verified: bool


def mteb_language_codes(languages: list[str]) -> list[str]:
    """ISO 639-1 codes (as in the standard schema) -> mteb's ISO 639-3 + script codes.

    mteb matches a subset on the ISO 639-3 part when no script filter is given, so 'zh-tw'
    (zho-Hant) also keeps zho-Hans subsets."""
    keys = {language: str(language).strip().lower() for language in languages}
    unknown = [language for language, key in keys.items() if key not in MTEB_LANGUAGES]
    if unknown:
        raise DataValidationError(CONFIG_SOURCE, "-", "mteb_languages",
                                  f"no mteb language code known for {unknown} (expected ISO 639-1 codes, one of "
                                  f"{', '.join(sorted(MTEB_LANGUAGES))}; add others to MTEB_LANGUAGES in retrofit_pipeline/evaluation.py)")
    return sorted({MTEB_LANGUAGES[key] for key in keys.values()})


def _official_task_names() -> list[str]:
    from mteb.get_tasks import TASK_LIST  # the registry mteb.get_task looks names up in

    return [cls.metadata.name for cls in TASK_LIST]


def _close_names(name: str, candidates: list[str]) -> list[str]:
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.6)
    return [by_lower[c] for c in close]


def _unknown_name_problem(kind: str, name: str, candidates: list[str], listing: str) -> str:
    close = _close_names(name, candidates)
    hint = f"close names: {', '.join(close)}" if close else f"no close name; {listing}"
    return f"unknown mteb {kind} {name!r}; {hint}"


def _named_task(name: str):
    import mteb

    try:
        return mteb.get_task(name)  # a fresh instance: safe to filter
    except KeyError:
        problem = _unknown_name_problem("task", name, _official_task_names(), "list them with mteb.get_tasks()")
        raise DataValidationError(CONFIG_SOURCE, "-", "mteb_tasks", problem) from None


def _benchmark_tasks(name: str) -> list:
    import mteb

    try:
        benchmark = mteb.get_benchmark(name)
    except KeyError:
        known = [b.name for b in mteb.get_benchmarks()]
        known += [alias for b in mteb.get_benchmarks() for alias in (b.aliases or [])]
        problem = _unknown_name_problem("benchmark", name, known, "list them with mteb.get_benchmarks()")
        raise DataValidationError(CONFIG_SOURCE, "-", "mteb_benchmark", problem) from None
    # Benchmarks are module-level singletons: filter copies, never the shared task objects.
    return [copy.deepcopy(task) for task in benchmark.tasks]


def _kind_problem(task, retrieval_only: bool) -> str | None:
    metadata = task.metadata
    if retrieval_only and metadata.type not in RETRIEVAL_TASK_TYPES:
        return (f"{metadata.name} is a {metadata.type} task, not a retrieval task (mteb type {RETRIEVAL_TASK_TYPES[0]!r}); "
                "remove it, or turn the retrieval restriction off (evaluation.mteb_retrieval_only: false)")
    if list(metadata.modalities) != ["text"]:
        return f"{metadata.name} needs {list(metadata.modalities)} inputs; a text encoder can run only text tasks"
    return None


def _restrict_languages(task, codes: list[str]) -> bool:
    """Keeps only the subsets whose languages are all among `codes`, within the subsets the task
    (or its benchmark) already selected; False when none is left."""
    try:
        task.filter_languages(codes, hf_subsets=list(task.hf_subsets), exclusive_language_filter=True)
    except ValueError:
        return False
    return True


def resolve_official_tasks(task_names: list[str] | None, benchmark: str | None, languages: list[str] | None,
                           retrieval_only: bool = True) -> list:
    """Official mteb tasks: those named, then those of `benchmark` (each once), optionally only
    retrieval tasks and only subsets in `languages` (ISO 639-1).

    A named task that is unknown, of the wrong type or without a subset in `languages` is an
    error; benchmark tasks that do not fit are left out (the count is logged)."""
    if not task_names and not benchmark:
        raise DataValidationError(CONFIG_SOURCE, "-", "mteb_tasks",
                                  "name official mteb tasks (evaluation.mteb_tasks) or a benchmark (evaluation.mteb_benchmark)")
    codes = mteb_language_codes(languages) if languages else None
    selected: dict[str, object] = {}
    for name in task_names or []:
        task = _named_task(name)
        problem = _kind_problem(task, retrieval_only)
        if problem:
            raise DataValidationError(CONFIG_SOURCE, "-", "mteb_tasks", problem)
        if codes and not _restrict_languages(task, codes):
            raise DataValidationError(CONFIG_SOURCE, "-", "mteb_languages",
                                      f"{name} has no subset in languages {languages}; its subsets: {', '.join(task.hf_subsets)}")
        selected.setdefault(task.metadata.name, task)
    if benchmark:
        left_out = {"type or modality": 0, "language": 0}
        for task in _benchmark_tasks(benchmark):
            if task.metadata.name in selected:
                continue
            if _kind_problem(task, retrieval_only):
                left_out["type or modality"] += 1
            elif codes and not _restrict_languages(task, codes):
                left_out["language"] += 1
            else:
                selected[task.metadata.name] = task
        logger.info("benchmark %s: left out %s", benchmark, left_out)
    if not selected:
        raise DataValidationError(CONFIG_SOURCE, "-", "mteb_benchmark",
                                  f"no task of {benchmark!r} is a text {'retrieval ' if retrieval_only else ''}task"
                                  f"{f' with subsets in {languages}' if languages else ''}")
    return list(selected.values())


def _leaf_tasks(task) -> list:
    """The tasks that load data: an aggregate task (e.g. CQADupstack) loads through its parts."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    return list(task.metadata.tasks) if isinstance(task, AbsTaskAggregate) else [task]


def _download_command(task, directory: str = "<DIR>") -> str:
    dataset = task.metadata.dataset
    return f"hf download {dataset['path']} --repo-type dataset --revision {dataset['revision']} --local-dir {directory}"


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _missing_data_message(task, cause: BaseException) -> str:
    import datasets

    name, dataset = task.metadata.name, task.metadata.dataset
    return (
        f"official mteb task {name}: its data, the Hugging Face dataset {dataset['path']} at revision {dataset['revision']}, "
        f"is neither in the local datasets cache ({datasets.config.HF_DATASETS_CACHE}) nor given as a local snapshot, "
        f"and the hub is offline (HF_HUB_OFFLINE=1). Do one of:\n"
        f"  1. run once with network access (unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE), which caches it, then run offline again;\n"
        f"  2. where there is network: `{_download_command(task)}`, bring <DIR> here and set\n"
        f"     evaluation.mteb_dataset_overrides: {{{name}: <DIR>}}\n"
        f"(cause: {type(cause).__name__}: {cause})"
    )


def _override_source(task, directory) -> DataSource:
    name, revision = task.metadata.name, task.metadata.dataset["revision"]
    path = Path(directory).expanduser().resolve()
    field = "mteb_dataset_overrides"
    if not path.is_dir():
        raise DataValidationError(CONFIG_SOURCE, name, field, f"{path} is not a directory; create it with `{_download_command(task, str(path))}`")
    if not (path / "README.md").is_file():
        raise DataValidationError(CONFIG_SOURCE, name, field,
                                  f"{path} is not a snapshot of the dataset repository: README.md (whose `configs:` name the "
                                  f"subsets) is missing; create it with `{_download_command(task, str(path))}`")
    record = path / DOWNLOAD_RECORD
    lines = record.read_text(encoding="utf-8").splitlines() if record.is_file() else []
    recorded = lines[0].strip() if lines else None
    if recorded and recorded != revision:
        raise DataValidationError(CONFIG_SOURCE, name, field,
                                  f"{path} holds revision {recorded} of {task.metadata.dataset['path']}, but mteb pins {revision}: "
                                  f"the scores would not be comparable; download the pinned one: `{_download_command(task, str(path))}`")
    if not recorded:
        logger.warning("%s: %s has no download record (%s); cannot check that it is revision %s", name, path, DOWNLOAD_RECORD, revision)
    return DataSource(f"local snapshot {path}", path, recorded == revision)


def _data_sources(tasks: list, overrides: dict) -> dict[str, DataSource]:
    """Checks, before any encoding, that every task's data can be read; one source per leaf task."""
    import datasets

    official = set(_official_task_names())
    for name in overrides:
        if name not in official:
            problem = _unknown_name_problem("task", name, sorted(official), "keys are official task names")
            raise DataValidationError(CONFIG_SOURCE, str(name), "mteb_dataset_overrides", problem)
    sources = {}
    for task in (leaf for top in tasks for leaf in _leaf_tasks(top)):
        name, dataset = task.metadata.name, task.metadata.dataset
        if name in overrides:
            sources[name] = _override_source(task, overrides[name])
        elif _offline():
            try:  # the first call mteb's loader makes; offline it reads only the local cache
                datasets.get_dataset_config_names(dataset["path"], revision=dataset["revision"])
            except Exception as error:
                raise OfficialDataUnavailableError(_missing_data_message(task, error)) from error
            sources[name] = DataSource(f"datasets cache (offline) {dataset['path']}", None, False)
        else:
            sources[name] = DataSource(f"hub {dataset['path']}@{dataset['revision']}", None, True)
    unused = set(overrides) - set(sources)
    if unused:
        logger.info("mteb_dataset_overrides for tasks not selected in this run: %s", sorted(unused))
    return sources


@contextmanager
def _dataset_path(task, local_path: Path | None) -> Iterator[None]:
    """Points the task's metadata at a local snapshot for the duration of the run (an instance-level
    copy, as mteb itself does for filtered data); the pinned revision is kept."""
    if local_path is None:
        yield
        return
    had_own = "metadata" in task.__dict__
    previous = task.__dict__.get("metadata")
    task.metadata = task.metadata.model_copy(update={"dataset": {**task.metadata.dataset, "path": str(local_path)}})
    try:
        yield
    finally:
        if had_own:
            task.metadata = previous
        else:
            task.__dict__.pop("metadata", None)


def _load(task, source: DataSource) -> None:
    try:
        task.load_data()
    except Exception as error:
        if source.local_path is not None:
            message = (f"official mteb task {task.metadata.name}: could not load it from {source.local_path}: "
                       f"{type(error).__name__}: {error}. The folder must be the dataset repository exactly as the hub holds it: "
                       f"`{_download_command(task, str(source.local_path))}`")
        elif _offline():
            message = _missing_data_message(task, error)
        else:
            message = (f"official mteb task {task.metadata.name}: could not download {task.metadata.dataset['path']} "
                       f"at revision {task.metadata.dataset['revision']}: {type(error).__name__}: {error}. Without hub access, "
                       f"run `{_download_command(task)}` where there is network, bring <DIR> here and set "
                       f"evaluation.mteb_dataset_overrides: {{{task.metadata.name}: <DIR>}} (and HF_HUB_OFFLINE=1)")
        raise OfficialDataUnavailableError(message) from error


def _named_encoder(model, model_name: str | None):
    """mteb names results after the model card (often the BASE model's id): give the checkpoint its own name."""
    if model_name is None:
        return model
    if "/" not in model_name:
        raise ValueError(f"model_name {model_name!r} must look like 'organization/name' (mteb's convention)")
    from mteb.models import SentenceTransformerEncoderWrapper

    wrapper = SentenceTransformerEncoderWrapper(model)
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"name": model_name})
    return wrapper


def _score_table(task_results: list, tasks: list, sources: dict[str, DataSource]) -> pd.DataFrame:
    main_score = {task.metadata.name: task.metadata.main_score for task in tasks}
    task_sources = {task.metadata.name: [sources[leaf.metadata.name] for leaf in _leaf_tasks(task)] for task in tasks}
    rows = []
    for result in task_results:
        leaves = task_sources[result.task_name]
        for split, entries in result.scores.items():
            for entry in entries:
                rows.append({
                    "task": result.task_name, "subset": entry["hf_subset"], "languages": ",".join(entry.get("languages") or []),
                    "split": split, "main_score_name": main_score.get(result.task_name), "main_score": float(entry["main_score"]),
                    **{metric: float(entry.get(metric, float("nan"))) for metric in REPORTED_METRICS},
                    "dataset_revision": result.dataset_revision,
                    "data_source": "; ".join(sorted({leaf.description for leaf in leaves})),
                    "revision_verified": all(leaf.revision_verified for leaf in leaves),
                })
    return pd.DataFrame(rows).sort_values(["task", "subset", "split"]).reset_index(drop=True)


def evaluate_official(model, tasks: list, results_dir: Path, batch_size: int = 64, overrides: dict | None = None,
                      model_name: str | None = None) -> pd.DataFrame:
    """Runs `model` (a SentenceTransformer) on official mteb `tasks` with mteb.evaluate.

    Writes mteb's result JSON under `results_dir` (atomically: all tasks or nothing) and returns one
    row per task, subset and split: main score, REPORTED_METRICS, the dataset revision and where the
    data was read from. `overrides` maps a task name to a local snapshot of its dataset repository.
    Every task's data is checked before any encoding starts."""
    import mteb
    from mteb.cache import ResultCache

    tasks = list(tasks)
    if not tasks:
        raise ValueError("no official mteb task to evaluate")
    sources = _data_sources(tasks, dict(overrides or {}))
    encoder = _named_encoder(model, model_name)
    logging.getLogger("mteb").setLevel(logging.WARNING)
    task_results = []
    with atomic_directory(Path(results_dir)) as tmp:
        cache = ResultCache(cache_path=tmp)
        for task in tqdm(tasks, desc="official mteb tasks", leave=False, mininterval=2):
            leaves = _leaf_tasks(task)
            try:
                for leaf in leaves:
                    # Loaded here, not inside mteb.evaluate, so that a data problem is reported as one,
                    # with what to do about it; mteb then evaluates the loaded data as it would its own.
                    with _dataset_path(leaf, sources[leaf.metadata.name].local_path):
                        _load(leaf, sources[leaf.metadata.name])
                result = mteb.evaluate(encoder, task, cache=cache, overwrite_strategy="always",
                                       encode_kwargs={"batch_size": batch_size}, show_progress_bar=False)
            finally:
                for leaf in leaves:
                    if leaf.data_loaded:
                        leaf.unload_data()  # mteb leaves preloaded data to whoever loaded it
            task_results.extend(result.task_results)
    return _score_table(task_results, tasks, sources)
