"""A user's own documents as a source (kind: documents): folders of .txt/.md/.html files and
jsonl/parquet tables become passages, offline training pairs (title -> passage, inverse cloze) and
a held-out evaluation split by document; bad input fails once, naming every bad file and line."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize

from retrofit_pipeline.config import PRESETS_DIR, REPO_ROOT, load_config
from retrofit_pipeline.dagster_defs.experiment import Experiment
from retrofit_pipeline.dagster_defs.factory import build_definitions
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.schema import DataValidationError
from retrofit_pipeline.sources import load_raw_sources
from retrofit_pipeline.sources.documents import (
    DocumentsError, build_documents_source, count_tokens, load_passages, parse_html, parse_markdown, section_passages, training_passages,
)

GUIDE_EN = """---
title: Caring for the garden
---

# Caring for the garden

## Watering

Water the plants early in the morning, when the soil is cool. Give each plant a long drink twice a week rather than a little every day, so the roots grow deep.

## Pruning roses

Cut roses back in late winter, just above an outward-facing bud. Remove dead and crossing stems first, and keep the centre of the bush open to the air.

```
prune --all   # not passage text
```
"""
GUIDE_DE = """# Den Garten pflegen

## Gießen

Gießen Sie die Pflanzen früh am Morgen, wenn der Boden kühl ist. Geben Sie jeder Pflanze zweimal pro Woche viel Wasser statt jeden Tag ein wenig, damit die Wurzeln tief wachsen.

## Rosen schneiden

Schneiden Sie Rosen im späten Winter zurück, direkt über einer nach außen zeigenden Knospe. Entfernen Sie zuerst tote und sich kreuzende Triebe und halten Sie die Mitte des Strauchs offen.
"""
TICKET_FR = """Le scanner ne démarre plus

Depuis ce matin, le scanner du troisième étage ne s'allume plus. Le voyant reste éteint même après avoir changé la prise.

Solution : le câble d'alimentation était endommagé. Un nouveau câble a été installé et le scanner fonctionne de nouveau.
"""
MANUAL_HTML = """<html lang="es"><head><title>Manual del horno</title></head><body>
<nav>Inicio | Manuales</nav>
<h1>Horno modelo 5</h1>
<p>El horno modelo 5 cocina con aire caliente y tiene un programa de limpieza automática. Lea este manual antes del primer uso.</p>
<h2>Limpieza</h2>
<p>Active el programa de limpieza una vez al mes. El horno se calienta a alta temperatura y convierte los restos en ceniza, que se retira con un paño húmedo.</p>
<script>var x = "no es texto";</script>
</body></html>
"""


def _write(root: Path, files: dict) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def _jsonl(*rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


@pytest.fixture()
def folder(tmp_path) -> Path:
    rows = [
        {"doc_id": "faq-1", "language": "en", "title": "How do I reset my password?",
         "text": "Open the sign-in page and choose Forgot password. A link to set a new password is sent to your e-mail address and stays valid for one hour."},
        {"doc_id": "faq-1", "title": "Wie setze ich mein Passwort zurück?",  # no language: detected
         "text": "Öffnen Sie die Anmeldeseite und wählen Sie Passwort vergessen. Ein Link zum Setzen eines neuen Passworts wird an Ihre E-Mail-Adresse geschickt und ist eine Stunde gültig."},
    ]
    return _write(tmp_path / "docs", {
        "en/garden.md": GUIDE_EN, "de/garden.md": GUIDE_DE, "tickets/scanner.txt": TICKET_FR, "oven.es.html": MANUAL_HTML,
        "faq.jsonl": _jsonl(*rows), "images/photo.png": b"\x89PNG", ".hidden/notes.txt": "not read",
    })


def test_a_folder_of_documents_becomes_pairs_and_a_held_out_split(folder):
    passages, stats, _ = load_passages({"path": str(folder), "eval_fraction": 0.0})
    assert stats["files"] == 5 and stats["skipped_files"] == ["images/photo.png"]  # the hidden folder is not even listed
    assert stats["languages_assigned"] == {"given": 4, "detected": 2}  # folders, suffix + html lang, a row; the ticket and a row detected
    by_document = {(p.doc_id, p.language) for p in passages}
    assert by_document == {("garden.md", "en"), ("garden.md", "de"), ("tickets/scanner.txt", "fr"), ("oven.html", "es"),
                           ("faq.jsonl:faq-1", "en"), ("faq.jsonl:faq-1", "de")}
    texts = " ".join(p.text for p in passages)
    assert "prune --all" not in texts and "no es texto" not in texts and "Inicio" not in texts  # code, scripts, navigation
    headings = {p.heading for p in passages if p.heading}
    assert {"Watering", "Gießen", "Le scanner ne démarre plus", "Horno modelo 5", "Limpieza", "How do I reset my password?"} <= headings

    pairs, evaluation, stats = build_documents_source({"path": str(folder), "eval_fraction": 0.0, "domain": "garden"}, Path("."))
    assert evaluation is None  # nothing held out
    assert set(pairs["task_type"]) == {"title_retrieval", "inverse_cloze"}
    assert set(pairs["language"]) == {"en", "de", "fr", "es"} and set(pairs["domain"]) == {"garden"}
    watering = pairs[(pairs["task_type"] == "title_retrieval") & (pairs["query"] == "Watering")].iloc[0]
    assert watering["positive"].startswith("Water the plants early")
    cloze = pairs[pairs["task_type"] == "inverse_cloze"].iloc[0]
    assert cloze["query"] not in cloze["positive"]  # the sentence is cut out of its passage


def test_translations_are_held_out_together_and_scored(folder):
    pairs, evaluation, stats = build_documents_source({"path": str(folder), "eval_fraction": 0.5}, Path("."))
    passages, _, _ = load_passages({"path": str(folder), "eval_fraction": 0.5})
    held = {p.doc_id for p in passages if p.held_out}
    trained = {p.doc_id for p in passages if not p.held_out}
    assert held and trained and not held & trained  # a document (all its languages) is on one side only
    assert evaluation is not None and stats["evaluation_queries"] == len(evaluation.queries) > 0
    assert set(evaluation.corpus["doc_id"]) >= set(evaluation.qrels["doc_id"])
    held_texts = set(evaluation.corpus["text"])
    assert not held_texts & set(pairs["positive"])  # no held-out passage is trained on
    # The training passages the LLM is asked about are the training split's, nothing held out.
    assert {p.split("@")[0].split(":", 1)[1] for p in training_passages({"path": str(folder), "eval_fraction": 0.5})["passage_id"]} == trained


def test_passage_windows_cut_long_paragraphs_at_sentence_ends():
    sentence = "This sentence has exactly eight words in it. "
    passages = section_passages([sentence * 30], max_tokens=40)
    assert all(count_tokens(p) <= 40 for p in passages) and len(passages) == 6
    assert all(p.endswith("in it.") for p in passages)
    assert section_passages(["Short one.", "Short two."], max_tokens=40) == ["Short one. Short two."]  # packed
    assert count_tokens("東京は日本の首都です") == 10  # a CJK character is a token


def test_markdown_and_html_parsing():
    title, sections, language = parse_markdown("---\nlang: it\n---\n# Titolo\n\nTesto con [un link](http://x) e **grassetto**.\n\n| a | b |\n")
    assert (title, language) == ("Titolo", "it") and sections == [(None, ["Testo con un link e grassetto."])]
    title, sections, language = parse_html(MANUAL_HTML)
    assert title == "Horno modelo 5" and language == "es" and [h for h, _ in sections] == [None, "Limpieza"]


def test_every_bad_file_and_line_in_one_error(tmp_path):
    root = _write(tmp_path / "bad", {
        "good.md": GUIDE_EN,
        "latin1.txt": "Caf\xe9 cr\xe8me".encode("latin-1"),
        "empty.md": "```\ncode only\n```\n",
        "rows.jsonl": _jsonl({"text": "Fine text about something.", "language": "en"}) + "{not json}\n"
                      + _jsonl({"title": "no text"}, {"text": "x y z", "title": 5}, {"text": "Text here.", "language": "xx"},
                               {"doc_id": "d", "text": "One.", "language": "en"}, {"doc_id": "d", "text": "Two.", "language": "en"}),
        "table.parquet": b"not a parquet file",
    })
    with pytest.raises(DocumentsError) as caught:
        build_documents_source({"path": str(root)}, Path("."))
    message = str(caught.value)
    for expected in ["latin1.txt, line 1, field 'text': not valid UTF-8", "empty.md, field 'text': no text",
                     "rows.jsonl, line 2, field '-': not valid JSON", "rows.jsonl, line 3, field 'text': missing",
                     "rows.jsonl, line 4, field 'title': expected text", "rows.jsonl, line 5, field 'language': unknown language code 'xx'",
                     "rows.jsonl, line 7, field 'doc_id': a second document 'rows.jsonl:d'", "table.parquet, field '-': not a readable parquet file"]:
        assert expected in message, (expected, message)
    assert message.startswith(f"{root}: 8 problem(s) in 4 file(s)")
    assert isinstance(caught.value, DataValidationError)
    with pytest.raises(DataValidationError, match="does not exist"):
        build_documents_source({"path": str(tmp_path / "missing")}, Path("."))


def test_the_shipped_sample_and_presets():
    config = load_config(PRESETS_DIR / "own_documents.yaml")
    assert not config.synthetic.enabled
    spec = next(s for s in config.raw_sources if s["kind"] == "documents")
    pairs, evaluation, stats = build_documents_source(spec, REPO_ROOT / "artifacts" / ".cache")
    assert set(pairs["language"]) == {"de", "en", "es", "fr"} and stats["languages_assigned"]["detected"] >= 3
    assert evaluation is not None and len(evaluation.queries) >= 10
    assert sum(p.stat().st_size for p in (REPO_ROOT / spec["path"]).rglob("*") if p.is_file()) < 100_000  # a sample, kept small
    assert load_config(PRESETS_DIR / "own_documents_llm.yaml").synthetic.enabled


def _preset(tmp_path: Path, docs: Path, **extra) -> Path:
    values = {
        "name": "docs", "artifacts_dir": str(tmp_path / "artifacts"),
        "raw_sources": [{"kind": "documents", "source": "documents", "path": str(docs), "eval_fraction": 0.5}],
        "data_scales": {"small": 50}, "default_scale": "small",
        "base_model": Path(os.environ["RETROFIT_CONFIG"]).parent.joinpath("tiny-encoder").as_posix(), **extra,
    }
    path = tmp_path / "docs.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    return path


def _materialize(preset: Path, keys: list[str], raise_on_error=True):
    defs = build_definitions([Experiment(str(preset), primary=True)])
    return materialize(list(defs.assets) + list(defs.asset_checks), selection=[AssetKey(k) for k in keys], instance=DagsterInstance.ephemeral(),
                       resources={"settings": RetrofitSettings(config_path=str(preset), device="cpu")}, raise_on_error=raise_on_error)


def test_documents_through_the_pipeline(folder, tmp_path):
    preset = _preset(tmp_path, folder)
    result = _materialize(preset, ["raw_corpora", "evaluation_set", "training_pool"])
    assert result.success
    paths = ArtifactPaths(load_config(preset).experiment_dir)
    pool = pd.read_parquet(paths.training_pool)
    assert set(pool["task_type"]) <= {"title_retrieval", "inverse_cloze"} and len(pool) > 0
    assert "synthetic_queries" not in {key.to_user_string() for key in build_definitions([Experiment(str(preset), primary=True)]).resolve_asset_graph().get_all_asset_keys()}


def test_bad_documents_fail_the_asset_and_write_nothing(tmp_path):
    docs = _write(tmp_path / "docs", {"a.md": GUIDE_EN, "b.txt": b"\xff\xfe broken", "c.jsonl": "[1, 2]\n"})
    preset = _preset(tmp_path, docs)
    result = _materialize(preset, ["raw_corpora", "evaluation_set"], raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    assert "b.txt, line 1, field 'text': not valid UTF-8" in error.message and "c.jsonl, line 1, field '-': expected a JSON object" in error.message
    assert not (tmp_path / "artifacts").exists() or not any(p.is_file() for p in (tmp_path / "artifacts" / "docs").rglob("*.parquet"))


def test_load_raw_sources_accepts_documents_next_to_other_sources(folder):
    pairs, evaluation, stats = load_raw_sources([{"kind": "documents", "source": "mine", "path": str(folder), "eval_fraction": 0.5}], [], Path("."))
    assert set(pairs["source"]) == {"mine"} and stats["mine"]["rows"] == len(pairs)
    assert set(evaluation.queries["domain"]) == {"documents"}


@pytest.mark.filterwarnings("error:loading sources in worker")  # the sequential fallback would hide a broken worker path
def test_sources_of_different_kinds_load_in_worker_processes_with_the_same_rows_and_errors(folder, tmp_path, monkeypatch):
    """Two kinds load side by side in spawned workers (two cores assumed here, as on CI): the rows
    are those of loading one after another, and a source's bad line reaches the user as the same
    DataValidationError, naming file, line and field."""
    import pickle

    from retrofit_pipeline.schema import DataValidationError
    from retrofit_pipeline.sources import load_source, load_sources
    from retrofit_pipeline.sources.documents import DocumentsError

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"query": "wie liste ich dateien", "positive": "ls listet dateien auf", "language": "de"}) + "\n", encoding="utf-8")
    specs = [{"kind": "documents", "source": "mine", "path": str(folder), "eval_fraction": 0.5},
             {"kind": "local_pairs", "source": "own", "path": str(own)}]
    side_by_side = load_sources(specs, tmp_path)
    for (pairs, evaluation, stats), spec in zip(side_by_side, specs):
        expected_pairs, expected_evaluation, expected_stats = load_source(spec, tmp_path)
        pd.testing.assert_frame_equal(pairs, expected_pairs)
        assert stats == expected_stats and (evaluation is None) == (expected_evaluation is None)
    own.write_text(json.dumps({"query": "q", "positive": "p", "language": "xx"}) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as caught:
        load_sources(specs, tmp_path)
    assert "own.jsonl" in str(caught.value) and "line 1, field 'language'" in str(caught.value)
    # Errors cross the process boundary as themselves, fields included.
    error = DocumentsError("docs", [("a.txt, line 2", "text", "not valid UTF-8")])
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DocumentsError and str(copy) == str(error) and (copy.row, copy.field) == ("a.txt, line 2", "text")
