"""The evaluation plan of an experiment as the assets and checks read it: evaluation_set, split
into scored and dev queries, sampled and turned into scope subsets (scoring.plan_evaluation)."""

from __future__ import annotations

import pandas as pd

from ..schema import EvaluationSet
from ..scoring import EvaluationPlan, plan_evaluation
from .resources import RetrofitSettings


def read_evaluation(settings: RetrofitSettings) -> EvaluationSet:
    directory = settings.paths().evaluation
    return EvaluationSet(*(pd.read_parquet(directory / f"{part}.parquet") for part in ("corpus", "queries", "qrels")))


def evaluation_plan(settings: RetrofitSettings) -> EvaluationPlan:
    return plan_evaluation(read_evaluation(settings), settings.pipeline().evaluation)


def training_prompts(config) -> dict[str, str] | None:
    """The prompts the recipe trains with (the checkpoint saves them): the base is scored with
    them too, so a gain is the weights', not a prompt's."""
    prompts = {"query": config.training.query_prefix, "document": config.training.passage_prefix}
    return prompts if any(prompts.values()) else None
