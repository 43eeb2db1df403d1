"""The sweep's choice rule (scripts/recipe_sweep.py): variants are chosen on the dev split's gains."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("recipe_sweep", Path(__file__).resolve().parent.parent / "scripts" / "recipe_sweep.py")
recipe_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe_sweep)


def _means(in_domain: float, pooled: float, in_domain_low: float = 0.01) -> dict:
    return {"in-domain": {"gain": in_domain, "ci_low": in_domain_low}, "pooled": {"gain": pooled, "ci_low": pooled - 0.05}}


def test_the_best_qualifying_variant_on_dev_is_chosen_and_the_default_wins_ties():
    dev = {"default": _means(0.03, 0.10), "better": _means(0.04, 0.12), "forgets": _means(0.09, -0.03), "unsure": _means(0.2, 0.2, -0.01)}
    chosen, rule = recipe_sweep.choose(dev, margin=0.02)
    assert chosen == "better" and "dev" in rule
    assert recipe_sweep.choose({"default": _means(0.03, 0.10), "same": _means(0.03, 0.10)}, margin=0.02)[0] == "default"
    assert recipe_sweep.choose({"default": _means(0.0, 0.0, -0.1), "forgets": _means(0.09, -0.03)}, margin=0.02)[0] == "default"
