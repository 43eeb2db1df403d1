"""Passage identities: what names one passage (not its whole document) in every language.

The evaluation judges a query's relevant passages by identity in the pooled and cross-lingual
scopes, so a documents source's held-out passages carry their own passage's identity, not the
document's; training pairs keep the document's in `identity` and name the positive passage itself
in `passage_identity`, only where a source knows the translations align."""

import gzip
from collections import Counter
from pathlib import Path

import pandas as pd

from retrofit_pipeline.evaluation_scopes import CROSS_LINGUAL, IN_DOMAIN, POOLED, ScopeRules, build_subsets
from retrofit_pipeline.schema import validate_pairs
from retrofit_pipeline.sources.debian_docs import build_debian_docs
from retrofit_pipeline.sources.debian_manpages import build_pairs as manpage_pairs, load_manpages
from retrofit_pipeline.sources.documents import build_documents_source, build_evaluation, load_passages, section_windows
from retrofit_pipeline.sources.gettext_catalogs import build_gettext_catalogs
from retrofit_pipeline.sources.wikipedia_summaries import build_wikipedia_summaries
from test_debian_docs import REFERENCE, REFERENCE_PAGE, write_doc_tree
from test_gettext_catalogs import write_locale_tree
from test_manpages import write_man_tree
from test_wikipedia_summaries import _write_wheel

# One document in two languages, laid out alike: four passages (Configure has two paragraphs, each
# its own passage at passage_tokens=30: two would not fit), the same in both.
APP_EN = """# Using the app

## Install

Download the installer from the project website and run it. The setup wizard asks for a folder and then creates a shortcut.

## Configure

Open the settings window from the main menu of the app. Every option is saved as soon as you change it, without a button.

Choose a colour theme on the appearance tab of the settings. The dark theme is easier on the eyes in the evening hours.

## Remove

Uninstall the app from the control panel of the system. Your documents and your settings stay in your home folder.
"""
APP_DE = """# Die App benutzen

## Installieren

Laden Sie das Installationsprogramm von der Website herunter und starten Sie es. Der Assistent fragt nach einem Ordner.

## Einrichten

Öffnen Sie das Einstellungsfenster über das Hauptmenü der App. Jede Option wird sofort gespeichert, sobald Sie sie ändern, ganz ohne Knopf.

Wählen Sie ein Farbschema auf der Registerkarte Darstellung der Einstellungen. Das dunkle Schema schont am Abend die Augen sehr.

## Entfernen

Deinstallieren Sie die App über die Systemsteuerung. Ihre Dokumente und Einstellungen bleiben in Ihrem Ordner.
"""
# The German version has a section the English one lacks: no section is known to be the same.
FAQ_EN = """# Account questions

## Signing in

Sign in with the e-mail address you registered with. A forgotten password can be reset from the sign-in page.

## Billing

Invoices are sent at the start of every month. They list every seat of your team and the plan you chose.
"""
FAQ_DE = """# Fragen zum Konto

## Anmelden

Melden Sie sich mit der E-Mail-Adresse an, mit der Sie sich registriert haben. Ein vergessenes Passwort setzen Sie auf der Anmeldeseite zurück.

## Kontakt

Schreiben Sie uns über das Formular auf der Website. Wir antworten an Werktagen innerhalb von einem Tag.

## Abrechnung

Rechnungen werden zu Beginn jedes Monats verschickt. Sie führen jeden Platz Ihres Teams und den gewählten Tarif auf.
"""


def _documents(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for name, text in {"en/app.md": APP_EN, "de/app.md": APP_DE, "en/faq.md": FAQ_EN, "de/faq.md": FAQ_DE}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _held_out(tmp_path: Path):
    """Everything held out (a source needs training pairs, so its evaluation is built directly)."""
    passages, _, _ = load_passages({"path": str(_documents(tmp_path)), "eval_fraction": 1.0, "passage_tokens": 30})
    assert all(p.held_out for p in passages)
    return build_evaluation(passages, "documents", "documents", Counter())


def _translation(doc_id: str) -> str:
    other = {"en": "de", "de": "en"}
    stem, _, rest = doc_id.partition("@")
    language, _, number = rest.partition("#")
    return f"{stem}@{other[language]}#{number}"


def test_a_pooled_query_is_answered_by_its_own_passage_and_its_translation_not_other_sections(tmp_path):
    evaluation = _held_out(tmp_path)
    app = evaluation.queries[evaluation.queries["query_id"].str.contains(":app.md@")]
    assert len(app) == 8  # four passages per language, each queried once
    subsets = build_subsets(evaluation, ScopeRules(), scopes=(POOLED, CROSS_LINGUAL))
    pooled = [s for s in subsets if s.scope == POOLED]
    assert {s.language for s in pooled} == {"en", "de"}
    relevant = {query_id: set(group["doc_id"]) for s in pooled for query_id, group in s.qrels.groupby("query_id")}
    for query_id in app["query_id"]:
        own = query_id.split(":q:", 1)[1]
        assert relevant[query_id] == {own, _translation(own)}, query_id
    # The query "Remove" (its section's heading): the Remove passage in English and German, nothing of Install.
    remove = app.loc[app["text"] == "Remove", "query_id"].item()
    assert relevant[remove] == {"app.md@en#3", "app.md@de#3"}
    # Cross-lingual: a German query finds the English version of its own passage only.
    cross = {query_id: set(group["doc_id"]) for s in subsets if s.scope == CROSS_LINGUAL for query_id, group in s.qrels.groupby("query_id")}
    for query_id in app.loc[app["language"] == "de", "query_id"]:
        assert cross[query_id] == {_translation(query_id.split(":q:", 1)[1])}


def test_a_passage_whose_translations_do_not_align_is_scored_in_its_own_language_only(tmp_path):
    evaluation = _held_out(tmp_path)
    faq = evaluation.queries["query_id"].str.contains(":faq.md@")
    assert faq.any() and evaluation.queries.loc[faq, "identity"].isna().all()
    assert evaluation.corpus.loc[evaluation.corpus["doc_id"].str.startswith("faq.md@"), "identity"].isna().all()
    subsets = build_subsets(evaluation, ScopeRules(), scopes=(IN_DOMAIN, POOLED, CROSS_LINGUAL))
    scored = {scope: {q for s in subsets if s.scope == scope for q in s.queries["query_id"]} for scope in (IN_DOMAIN, POOLED, CROSS_LINGUAL)}
    faq_queries = set(evaluation.queries.loc[faq, "query_id"])
    assert faq_queries <= scored[IN_DOMAIN] and not faq_queries & (scored[POOLED] | scored[CROSS_LINGUAL])
    in_domain = pd.concat([s.qrels for s in subsets if s.scope == IN_DOMAIN])
    assert (in_domain[in_domain["query_id"].isin(faq_queries)].groupby("query_id").size() == 1).all()


def test_documents_pairs_name_their_passage_where_the_translations_align(tmp_path):
    pairs, _, _ = build_documents_source({"path": str(_documents(tmp_path)), "eval_fraction": 0.0, "passage_tokens": 30}, Path("."))
    app = pairs[pairs["identity"] == "documents:app.md"]
    named = app.set_index(["task_type", "query"])["passage_identity"]
    assert named[("title_retrieval", "Remove")] == named[("title_retrieval", "Entfernen")] == "documents:app.md#2.0"
    assert named[("title_retrieval", "Install")] == "documents:app.md#0.0"
    # The title row and the inverse-cloze row of one passage name the same passage, in both languages.
    second = app[app["passage_identity"] == "documents:app.md#1.1"]
    assert sorted(second["language"]) == ["de", "en"] and set(second["task_type"]) == {"inverse_cloze"}
    assert app.groupby("passage_identity")["language"].nunique().eq(2).all() and app["passage_identity"].nunique() == 4
    faq = pairs[pairs["identity"] == "documents:faq.md"]
    assert len(faq) and faq["passage_identity"].isna().all()  # the document identity stays, for mining


def test_a_paragraph_cut_at_sentence_ends_is_not_known_to_match_its_translation():
    sentence = "This sentence has exactly eight words in it. "
    assert all(held is None for _, held in section_windows([sentence * 30], max_tokens=40))
    assert section_windows(["Short one.", "Short two.", sentence * 6], max_tokens=40) == [
        ("Short one. Short two.", (0, 1)), (" ".join([sentence.strip()] * 5), None), (sentence.strip(), None)]


def test_debian_docs_pairs_name_the_paragraph_where_the_section_has_the_english_paragraphs(tmp_path):
    root = write_doc_tree(tmp_path)
    # A German section with a paragraph the English one lacks (another version of the text).
    extra = REFERENCE["de"]["p1"] + "</p><p>Ein weiterer Absatz, den nur die deutsche Übersetzung hat, weil sie einer anderen Fassung folgt."
    (root / "usr/share/debian-reference/ch02.de.html").write_text(REFERENCE_PAGE.format(**{**REFERENCE["de"], "p1": extra}), encoding="utf-8")
    pairs, _, _ = build_debian_docs({"doc_root": str(root), "eval_fraction": 0.0}, tmp_path / "cache")
    named = pairs.set_index(["task_type", "language", "passage_language", "query"])["passage_identity"]
    install = "system-docs:faq:basic-defs#install#0"
    assert named[("question_answering", "en", "en", "How do I install a package?")] == install
    assert named[("question_answering", "de", "de", "Wie installiere ich ein Paket?")] == install
    assert named[("cross_lingual_retrieval", "en", "de", "How do I install a package?")] == install
    # The English paragraph German left untranslated (dropped there) keeps its place: German's
    # first passage is still paragraph 0, English's second paragraph 1.
    configuration = "system-docs:reference:ch02#_package_configuration"
    assert named[("title_retrieval", "de", "de", "Paketkonfiguration")] == f"{configuration}#0"
    assert named[("inverse_cloze", "en", "en", "Esoteric configuration may be manually enabled by the system administrator.")] == f"{configuration}#1"
    prerequisites = pairs[pairs["identity"] == "system-docs:reference:ch02#_debian_package_management_prerequisites"]
    german = prerequisites["passage_language"] == "de"
    assert german.any() and prerequisites.loc[german, "passage_identity"].isna().all()
    assert set(prerequisites.loc[~german, "passage_identity"]) == {"system-docs:reference:ch02#_debian_package_management_prerequisites#0"}


def test_manpage_pairs_name_the_one_liner_and_paragraphs_of_a_description_like_the_english(tmp_path):
    root = write_man_tree(tmp_path)
    # A German cp.1 whose DESCRIPTION has a paragraph more than the English page's.
    body = ".SH BEZEICHNUNG\ncp \\- Dateien und Verzeichnisse kopieren\n.SH BESCHREIBUNG\nKopiert QUELLE nach ZIEL oder mehrere QUELLEN in VERZEICHNIS.\n" \
           ".PP\nDieser Absatz steht nur in einer neueren Fassung der Seite. Er hat kein englisches Gegenstück.\n"
    (root / "de" / "man1" / "cp.1.gz").write_bytes(gzip.compress(body.encode("utf-8")))
    pairs = manpage_pairs(load_manpages(root))
    named = pairs.set_index(["task_type", "passage_language", "query"])["passage_identity"]
    assert named[("bitext", "en", "выводит список файлов каталога")] == "manpages:ls.1#NAME"
    assert named[("summary_retrieval", "ja", "ディレクトリの内容をリスト表示する")] == named[("summary_retrieval", "en", "list directory contents")] \
        == "manpages:ls.1#DESCRIPTION.0"
    cloze = pairs[(pairs["task_type"] == "inverse_cloze") & (pairs["identity"] == "manpages:ls.1")]
    assert set(cloze["passage_identity"]) == {"manpages:ls.1#DESCRIPTION.1"}
    assert named[("summary_retrieval", "en", "copy files and directories")] == "manpages:cp.1#DESCRIPTION.0"
    assert pd.isna(named[("summary_retrieval", "de", "Dateien und Verzeichnisse kopieren")])


def test_wikipedia_pairs_name_the_summary_of_aligned_articles_only(tmp_path):
    pairs, _, _ = build_wikipedia_summaries({"package_dir": str(_write_wheel(tmp_path / "wheel")), "eval_fraction": 0.5}, tmp_path / "cache")
    titles = pairs[pairs["task_type"] == "title_retrieval"].set_index(["language", "query"])["passage_identity"]
    for group in ([("en", "Marie Curie"), ("fr", "Marie Curie"), ("es", "Marie Curie")], [("en", "Tokyo"), ("fr", "Tokyo"), ("es", "Tokio")],
                  [("en", "Paris"), ("fr", "Paris")], [("en", "Mount Everest"), ("es", "Monte Everest")]):
        trained = [key for key in group if key in titles.index]
        assert len({titles[key] for key in trained}) <= 1  # one summary, in every language trained on
    assert (titles.dropna().str.endswith("#summary")).all()
    if ("es", "Malé") in titles.index:  # a title match whose topics disagree is another article
        assert pd.isna(titles[("es", "Malé")])
    if ("fr", "Chat") in titles.index:  # not aligned to English "Cat"
        assert pd.isna(titles[("fr", "Chat")])
    cross = pairs[pairs["task_type"] == "cross_lingual_retrieval"]
    assert len(cross) and (cross["passage_identity"] == cross["identity"] + "#summary").all()


def test_gettext_pairs_name_the_english_message(tmp_path):
    root = write_locale_tree(tmp_path / "locale")
    pairs, _, _ = build_gettext_catalogs({"locale_root": str(root), "min_pairs_per_language": 1, "evaluation": False}, tmp_path)
    assert pairs["passage_identity"].notna().all() and (pairs["passage_identity"] == pairs["identity"]).all()
    assert pairs.groupby("positive")["passage_identity"].nunique().eq(1).all()


def test_validation_keeps_passage_identity_and_blanks_are_missing():
    frame = pd.DataFrame({
        "pair_id": ["a", "b", "c"], "query": ["q one", "q two", "q three"], "positive": ["p one", "p two", "p three"],
        "language": ["en", "de", "en"], "task_type": ["title_retrieval"] * 3, "source": ["s"] * 3,
        "identity": ["doc", "doc", None], "passage_identity": ["doc#1", " ", float("nan")],
    })
    validated = validate_pairs(frame, "test")
    assert validated["passage_identity"].iloc[0] == "doc#1" and validated["passage_identity"].iloc[1:].isna().all()
    assert list(validated["identity"].iloc[:2]) == ["doc", "doc"] and pd.isna(validated["identity"].iloc[2])
