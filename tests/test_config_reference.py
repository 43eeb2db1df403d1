"""docs/CONFIG.md is generated from the configuration dataclasses: it must be current, every key
must have a meaning, and every key a shipped preset sets must be in it."""

from dataclasses import dataclass

import pytest

from retrofit_pipeline.config import PRESETS_DIR, REPO_ROOT, _read_preset
from retrofit_pipeline.config_reference import field_docs, known_keys, preset_keys, reference, render

CONFIG_MD = REPO_ROOT / "docs" / "CONFIG.md"


def test_config_reference_is_current():
    assert CONFIG_MD.read_text(encoding="utf-8") == render(), (
        "docs/CONFIG.md is out of date: run `.venv/bin/python scripts/config_reference.py` and commit it")


def test_every_key_has_a_type_a_default_and_a_meaning():
    entries = [entry for section in reference().values() for entry in section]
    assert len(entries) > 100  # every section, not only the top level
    undocumented = [entry.key for entry in entries if not entry.doc]
    assert not undocumented, f"give these fields a comment in their settings class: {undocumented}"
    assert all(entry.type and entry.default for entry in entries)
    by_key = {entry.key: entry for entry in entries}
    assert by_key["training.learning_rate"].type == "float" and by_key["training.learning_rate"].default == "5e-05"
    assert by_key["name"].default == "required" and by_key["artifacts_dir"].default == '"artifacts"'
    assert "fp32" in by_key["evaluation.precision"].doc


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS_DIR.glob("*.yaml")))
def test_every_key_of_a_shipped_preset_is_in_the_reference(preset):
    keys = [key for key in preset_keys(_read_preset(PRESETS_DIR / preset)) if key != "extends"]
    assert keys
    unknown = sorted(set(keys) - known_keys())
    assert not unknown, f"{preset}: keys the reference does not know: {unknown}"


def test_a_fields_meaning_is_the_comment_above_it_and_its_own():
    @dataclass
    class Example:
        # A group heading
        # over two lines.
        first: int = 1  # the first's own
        second: str | None = None

        third: float = 0.5  # alone

    docs = field_docs(Example)
    assert docs["first"] == ("int", "A group heading over two lines. the first's own")
    assert docs["second"] == ("str | None", "")
    assert docs["third"] == ("float", "alone")
