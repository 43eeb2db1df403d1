"""Write docs/CONFIG.md, the reference of every preset key, from the configuration dataclasses
(retrofit_pipeline/config_reference.py). Run after changing a settings field or its comment:
    .venv/bin/python scripts/config_reference.py
tests/test_config_reference.py fails while the file is out of date."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from retrofit_pipeline.artifact_io import write_text  # noqa: E402  (atomic: temp file, then rename)
from retrofit_pipeline.config_reference import render  # noqa: E402

TARGET = REPO / "docs" / "CONFIG.md"

if __name__ == "__main__":
    write_text(render(), TARGET)
    print(f"wrote {TARGET}")
