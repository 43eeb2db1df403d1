"""Model loading runs nothing that came with the model: weights load from safetensors only (a
pickled checkpoint is refused before it is unpickled), and a checkpoint's own Python code runs
only when the configuration turns trust_remote_code on."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from retrofit_pipeline.encoder import load_encoder


class _WritesAMarkerWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.fixture()
def tiny_encoder(tmp_path) -> Path:
    source = Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder"
    target = tmp_path / "model"
    shutil.copytree(source, target)
    return target


def test_a_pickled_checkpoint_is_refused_unopened(tiny_encoder, tmp_path):
    marker = tmp_path / "marker"
    (tiny_encoder / "model.safetensors").unlink()
    with open(tiny_encoder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weights": _WritesAMarkerWhenUnpickled(marker)}, handle)
    with pytest.raises(OSError, match="safetensors"):
        load_encoder(str(tiny_encoder), device="cpu")
    assert not marker.exists()


CUSTOM_CODE = """
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
from transformers import BertModel


class CustomModel(BertModel):  # a class of its own: transformers marks the loaded class for auto-class saving
    pass
"""


def _with_custom_code(model_dir: Path, marker: Path) -> None:
    (model_dir / "custom_modeling.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "custom_modeling.CustomModel"}
    (model_dir / "config.json").write_text(json.dumps(config))


def test_a_checkpoints_own_code_runs_only_when_turned_on(tiny_encoder, tmp_path):
    marker = tmp_path / "marker"
    _with_custom_code(tiny_encoder, marker)
    model = load_encoder(str(tiny_encoder), device="cpu")  # the default: the library's own BertModel
    assert not marker.exists()
    assert type(model[0].auto_model).__module__.startswith("transformers.models.bert")

    load_encoder(str(tiny_encoder), device="cpu", trust_remote_code=True)  # `training.trust_remote_code: true`
    assert marker.read_text() == "remote code ran"
