"""What `retrofit run` shows: one line per finished step and the final tables on the terminal;
Dagster's debug log, library warnings and progress bars in a log file (printed at the start).
Errors still print in full. With --verbose everything goes to the terminal as well."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

from dagster import logger


# Asset checks run as steps of their own; their outcome is shown only when one fails.
_CHECK_STEP_SUFFIXES = ("_no_train_eval_overlap", "_negatives_differ_from_positive", "_index_covers_corpus",
                        "_scores_for_every_language", "_retrofitted_beats_base_in_domain", "_no_forgetting")


class _StepLines(logging.Filter):
    """Turns Dagster's structured events into the few lines a user wants to see."""

    def __init__(self, console: TextIO):
        super().__init__()
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None:
            return False
        kind = event.event_type_value
        if kind == "STEP_SUCCESS" and not event.step_key.endswith(_CHECK_STEP_SUFFIXES):
            seconds = event.event_specific_data.duration_ms / 1000
            print(f"  done  {event.step_key:<44} {seconds:8.1f} s", file=self.console, flush=True)
        elif kind == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            evaluation = event.event_specific_data
            print(f"  CHECK FAILED  {evaluation.asset_key.to_user_string()}: {evaluation.check_name} "
                  f"{dict((k, v.value) for k, v in evaluation.metadata.items())}", file=self.console, flush=True)
        elif kind == "STEP_FAILURE":
            print(f"  FAILED  {event.step_key}\n{event.event_specific_data.error.to_string()}", file=self.console, flush=True)
        return False  # printed here, in this form; the file handler keeps the full record


def run_logger(log_file: Path, console: TextIO, verbose: bool):
    """The Dagster logger `retrofit run` installs as "console": everything to `log_file`, and to
    the terminal either everything (verbose) or one line per step."""

    @logger(description="retrofit run: full log to a file, one line per step on the terminal")
    def retrofit_run_logger(_init_context):
        log = logging.getLogger("retrofit.run")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        log.handlers.clear()
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(to_file)
        to_console = logging.StreamHandler(console)
        if not verbose:
            to_console.addFilter(_StepLines(console))
        log.addHandler(to_console)
        return log

    return retrofit_run_logger


@contextmanager
def quiet_terminal(log_file: Path, verbose: bool) -> Iterator[TextIO]:
    """Yields the stream for the user's lines. Unless verbose, everything else that would reach the
    terminal (stderr: library warnings, progress bars, C-level messages) goes to `log_file`."""
    if verbose:
        yield sys.stdout
        return
    os.environ["TQDM_DISABLE"] = "1"
    logging.captureWarnings(True)
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    root.addHandler(file_handler)
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with open(log_file, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield sys.stdout
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            root.removeHandler(file_handler)
