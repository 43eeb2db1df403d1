"""The asset factory: one experiment's assets, checks, jobs, schedule, sensor and resource as a
Definitions, and the Definitions of several experiments side by side (with experiments_report)."""

from __future__ import annotations

from dagster import Definitions

from . import automation, checks
from .assets import checkpoint, data, experiments, index, negatives, official, scores, synthetic
from .experiment import Experiment, check_distinct


def experiment_definitions(exp: Experiment) -> Definitions:
    """Everything of one experiment, under its key prefix, group, job and resource names."""
    jobs, schedules, sensors = automation.build(exp)
    return Definitions(
        assets=[*data.build(exp), *synthetic.build(exp), *negatives.build(exp), *checkpoint.build(exp), *index.build(exp), *scores.build(exp),
                *official.build(exp)],
        asset_checks=checks.build(exp),
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={exp.resource_key: exp.resource()},
    )


def build_definitions(experiment_list: list[Experiment]) -> Definitions:
    """The experiments (the primary first) side by side in one Definitions, and experiments_report
    over all of them."""
    experiment_list = check_distinct(experiment_list)
    if not experiment_list or not experiment_list[0].primary or any(exp.primary for exp in experiment_list[1:]):
        raise ValueError("the first experiment, and only it, must be the primary one")
    return Definitions.merge(*(experiment_definitions(exp) for exp in experiment_list),
                             Definitions(assets=[experiments.build(experiment_list)]))
