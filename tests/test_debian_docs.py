"""Debian's translated manuals (FAQ, Reference, ...) parsed from their packaged DocBook HTML."""

from pathlib import Path

import pytest

from retrofit_pipeline.schema import DataValidationError
from retrofit_pipeline.sources.debian_docs import (
    build_debian_docs, build_evaluation_set, discover_files, iso_language, load_sections, parse_sections,
)
from retrofit_pipeline.sources.debian_manpages import is_evaluation_page

# The shape of usr/share/doc/debian/FAQ/*.html (DocBook XSL, XHTML 1.0).
FAQ_PAGE = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd"><html xmlns="http://www.w3.org/1999/xhtml"><head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8" /><title>{chapter}</title></head><body><div class="navheader"><table width="100%" summary="Navigation header"><tr><th colspan="3" align="center">{chapter}</th></tr></table><hr /></div><div class="chapter"><div class="titlepage"><div><div><h1 class="title"><a id="basic-defs"></a>{chapter}</h1></div></div></div><div class="toc"><p><strong>Table of Contents</strong></p><dl class="toc"><dt><span class="section"><a href="#whatisdebian">1.1. {q1}</a></span></dt></dl></div><div class="section"><div class="titlepage"><div><div><h2 class="title"><a id="whatisdebian"></a>1.1. {q1}</h2></div></div></div><p>
{a1}
</p><div class="itemizedlist"><ul class="itemizedlist" type="disc"><li class="listitem"><p>{item}</p></li></ul></div></div><div class="section"><div class="titlepage"><div><div><h2 class="title"><a id="install"></a>1.2. {q2}</h2></div></div></div><p>{a2}</p><pre class="screen">
apt install hello
</pre><p>{a2b}</p></div></div></body></html>
"""
FAQ = {
    "en": dict(chapter="Chapter 1. Definitions and overview", q1="What is Debian GNU/Linux?",
               a1="Debian GNU/Linux is a particular distribution of the Linux operating system, and numerous packages that run on it.",
               item="full featured: Debian includes more than 59100 software packages at present.",
               q2="How do I install a package?",
               a2="Packages are installed with the apt tool, which downloads them from a Debian mirror together with their dependencies.",
               a2b="The package manager then unpacks the files and runs the configuration scripts of each package in the right order."),
    "de": dict(chapter="Kapitel 1. Definitionen und Überblick", q1="Was ist Debian GNU/Linux?",
               a1="Debian GNU/Linux ist eine spezielle Distribution des Linux-Betriebssystems mit zahlreichen Paketen, die darauf laufen.",
               item="voll ausgestattet: Debian enthält zur Zeit mehr als 59100 Software-Pakete.",
               q2="Wie installiere ich ein Paket?",
               a2="Pakete werden mit dem Werkzeug apt installiert, das sie samt ihren Abhängigkeiten von einem Debian-Spiegel herunterlädt.",
               a2b="Die Paketverwaltung entpackt dann die Dateien und führt die Konfigurationsskripte jedes Pakets in der richtigen Reihenfolge aus."),
}

# The shape of usr/share/debian-reference/ch02.<lang>.html (asciidoc + DocBook XSL, XHTML 1.1).
REFERENCE_PAGE = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
  <head>
    <title>{chapter}</title>
    <meta http-equiv="Content-Type" content="text/html; charset=UTF-8"/>
  </head>
  <body>
    <div class="chapter">
      <div class="titlepage"><div><div><h1 class="title"><a id="_debian_package_management"/>{chapter}</h1></div></div></div>
      <div class="section">
        <div class="titlepage">
          <div>
            <div>
              <h2 class="title"><a id="_debian_package_management_prerequisites"/>2.1. {h1}</h2>
            </div>
          </div>
        </div>
        <p>{p1}</p>
        <div class="section">
          <div class="titlepage"><div><div>
                <h3 class="title"><a id="_package_configuration"/>2.1.1. {h2}</h3>
          </div></div></div>
          <p>{p2}</p>
          <div class="warning" style="margin-left: 0.5in; margin-right: 0.5in;">
            <table border="0" summary="Warning"><tr><td align="left" valign="top">
              <p>{warning}</p>
            </td></tr></table>
          </div>
          <p>{p3}</p>
        </div>
      </div>
    </div>
  </body>
</html>
"""
# The last German paragraph was left in English by the translators: it must be skipped.
UNTRANSLATED = "Esoteric configuration may be manually enabled by the system administrator. This may create interference with popular generic helper programs."
REFERENCE = {
    "en": dict(chapter="Chapter 2. Debian package management", h1="Debian package management prerequisites",
               p1="Debian is a volunteer organization which builds consistent distributions of pre-compiled binary packages. "
                  "Each package comes with its own configuration script with a standardized user interface.",
               h2="Package configuration",
               p2="Here are some key points for package configuration on the Debian system, which every administrator should know.",
               warning="Do not install packages from random mixture of suites, since it probably breaks the package consistency.",
               p3=UNTRANSLATED),
    "de": dict(chapter="Kapitel 2. Debian-Paketmanagement", h1="Voraussetzungen für das Debian-Paketmanagement",
               p1="Debian ist eine Freiwilligenorganisation, die konsistente Distributionen vorkompilierter Binärpakete erstellt. "
                  "Jedes Paket enthält ein eigenes Konfigurationsskript mit einer standardisierten Benutzerschnittstelle.",
               h2="Paketkonfiguration",
               p2="Hier einige Kernpunkte zur Paketkonfiguration im Debian-System, die jeder Administrator kennen sollte.",
               warning="Installieren Sie keine Pakete aus einer wilden Mischung von Suites, da dies die Konsistenz beschädigen kann.",
               p3=UNTRANSLATED),
}
SECTION_KEYS = [
    "faq:basic-defs#whatisdebian", "faq:basic-defs#install",
    "reference:ch02#_debian_package_management_prerequisites", "reference:ch02#_package_configuration",
]


def write_doc_tree(root: Path) -> Path:
    """The two manuals as the packages lay them out (debian-faq, debian-faq-de, debian-reference-{en,de})."""
    faq = root / "usr/share/doc/debian/FAQ"
    (faq / "de").mkdir(parents=True)
    (faq / "basic-defs.en.html").write_text(FAQ_PAGE.format(**FAQ["en"]), encoding="utf-8")
    (faq / "basic-defs.html").symlink_to("basic-defs.en.html")  # the package's language-less alias
    (faq / "de" / "basic-defs.de.html").write_text(FAQ_PAGE.format(**FAQ["de"]), encoding="utf-8")
    reference = root / "usr/share/debian-reference"
    reference.mkdir(parents=True)
    for language, fields in REFERENCE.items():
        (reference / f"ch02.{language}.html").write_text(REFERENCE_PAGE.format(**fields), encoding="utf-8")
    return root


def _fraction_splitting_the_fixture() -> float:
    """An eval fraction that holds out some but not all of the fixture's sections."""
    for fraction in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        held_out = [is_evaluation_page(key, fraction) for key in SECTION_KEYS]
        if any(held_out) and not all(held_out):
            return fraction
    raise AssertionError("no fraction splits the fixture")


def test_language_codes_follow_iso_639_1():
    assert [iso_language(t) for t in ("zh-cn", "zh_CN", "zh-TW", "pt-BR", "pt", "de-DE", "nb-NO")] == ["zh", "zh", "zh-tw", "pt-br", "pt", "de", "nb"]


def test_files_are_found_in_the_package_layout(tmp_path):
    files = discover_files(write_doc_tree(tmp_path))
    assert sorted((f.collection, f.page, f.language) for f in files) == [
        ("faq", "basic-defs", "de"), ("faq", "basic-defs", "en"), ("reference", "ch02", "de"), ("reference", "ch02", "en")]


def test_pairs_of_every_task_type(tmp_path):
    pairs, evaluation, stats = build_debian_docs({"doc_root": str(write_doc_tree(tmp_path)), "eval_fraction": 0.0}, tmp_path / "cache")
    assert set(pairs["task_type"]) == {"question_answering", "title_retrieval", "inverse_cloze", "cross_lingual_retrieval"}
    assert set(pairs["domain"]) == {"system-docs"} and set(pairs["source"]) == {"debian-docs"}
    by = {(r.task_type, r.language, r.passage_language, r.query): r.positive for r in pairs.itertuples()}
    # FAQ questions find the first paragraph of their answer; the code listing is not a passage.
    assert by[("question_answering", "en", "en", "How do I install a package?")] == FAQ["en"]["a2"]
    assert by[("question_answering", "de", "de", "Wie installiere ich ein Paket?")] == FAQ["de"]["a2"]
    # Reference headings (numbering removed) find their section's first paragraph, not the subsection's.
    assert by[("title_retrieval", "de", "de", "Voraussetzungen für das Debian-Paketmanagement")] == REFERENCE["de"]["p1"]
    assert by[("title_retrieval", "en", "en", "Package configuration")] == REFERENCE["en"]["p2"]
    # Aligned anchors pair the English heading with the German passage.
    assert by[("cross_lingual_retrieval", "en", "de", "Package configuration")] == REFERENCE["de"]["p2"]
    assert by[("cross_lingual_retrieval", "en", "de", "What is Debian GNU/Linux?")] == FAQ["de"]["a1"]
    # A paragraph's first sentence finds the rest of it.
    assert by[("inverse_cloze", "de", "de", "Debian ist eine Freiwilligenorganisation, die konsistente Distributionen vorkompilierter Binärpakete erstellt.")] == \
        "Jedes Paket enthält ein eigenes Konfigurationsskript mit einer standardisierten Benutzerschnittstelle."
    assert by[("inverse_cloze", "en", "en", "Esoteric configuration may be manually enabled by the system administrator.")] == \
        "This may create interference with popular generic helper programs."
    passages = set(pairs["positive"]) | set(pairs["query"])
    # Skipped: list items and warnings (not running text), the code listing, English left in the German version.
    assert not any("apt install hello" in text or "59100" in text or "random mixture" in text for text in passages)
    german = pairs[pairs["passage_language"] == "de"]
    assert not any("Esoteric" in text or "interference" in text for text in list(german["positive"]) + list(german["query"]))
    assert stats["dropped"]["untranslated_paragraph"] == 1 and stats["dropped"]["code_block"] == 2
    # One query id per distinct query: the English heading is one query with an English and a German positive.
    same_query = pairs[pairs["query"] == "Package configuration"]
    assert len(same_query) == 2 and same_query["query_id"].nunique() == 1
    assert pairs.groupby("query_id")["query"].nunique().max() == 1
    assert stats["pairs_per_passage_language_and_task"]["de"]["cross_lingual_retrieval"] == 4
    assert stats["sections_per_language"] == {"de": 4, "en": 4}


def test_sections_are_held_out_whole_in_every_language(tmp_path):
    fraction = _fraction_splitting_the_fixture()
    pairs, evaluation, stats = build_debian_docs({"doc_root": str(write_doc_tree(tmp_path)), "eval_fraction": fraction}, tmp_path / "cache")
    held_out = {key for key in SECTION_KEYS if is_evaluation_page(key, fraction)}
    for language in ("en", "de"):
        assert set(evaluation.corpus.loc[evaluation.corpus["language"] == language, "doc_id"]) == {f"{language}:{key}" for key in held_out}
    assert set(evaluation.queries["query_id"]) == {f"q:{language}:{key}" for language in ("en", "de") for key in held_out}
    # Nothing of a held-out section is trained on, in any language or task.
    trained = {pair_id.split(":", 2)[2].rsplit(":", 1)[0] for pair_id in pairs["pair_id"]}
    assert trained == set(SECTION_KEYS) - held_out
    assert not set(evaluation.corpus["text"]) & set(pairs["positive"])
    assert evaluation.queries.groupby("language")["text"].apply(lambda t: t.duplicated().any()).sum() == 0
    qrels = evaluation.qrels.merge(evaluation.queries, on="query_id").merge(evaluation.corpus, on="doc_id", suffixes=("_query", "_doc"))
    assert (qrels["language_query"] == qrels["language_doc"]).all()
    assert stats["eval_queries_per_language"] == {"de": len(held_out), "en": len(held_out)}


def test_repeated_heading_is_not_an_evaluation_query(tmp_path):
    root = write_doc_tree(tmp_path)
    page = root / "usr/share/debian-reference/ch02.en.html"
    # Both English reference sections titled alike: the heading names neither.
    page.write_text(page.read_text(encoding="utf-8").replace("Debian package management prerequisites", "Package configuration"), encoding="utf-8")
    from collections import Counter

    dropped = Counter()
    sections = [s for s in load_sections(discover_files(root), dropped) if s.language == "en"]
    evaluation = build_evaluation_set(sections, dropped)
    assert "Package configuration" not in set(evaluation.queries["text"])
    assert len(evaluation.corpus) == 4 and len(evaluation.queries) == 2
    assert dropped["eval_ambiguous_query"] == 2


def test_paragraph_repeated_in_a_held_out_section_is_not_trained_on(tmp_path):
    root = write_doc_tree(tmp_path)
    page = root / "usr/share/debian-reference/ch02.en.html"
    # The Reference repeats some paragraphs in two sections: here the FAQ answer, in the reference chapter.
    page.write_text(page.read_text(encoding="utf-8").replace(REFERENCE["en"]["p2"], FAQ["en"]["a1"]), encoding="utf-8")
    fraction = next(f for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9) if is_evaluation_page(SECTION_KEYS[0], f) != is_evaluation_page(SECTION_KEYS[3], f))
    pairs, evaluation, stats = build_debian_docs({"doc_root": str(root), "eval_fraction": fraction}, tmp_path / "cache")
    english = pairs[pairs["passage_language"] == "en"]
    assert not english["positive"].str.contains("particular distribution").any() and not english["query"].str.contains("particular distribution").any()
    assert FAQ["en"]["a1"] in set(evaluation.corpus["text"])
    assert stats["dropped"]["paragraph_also_held_out"] == 1


def test_languages_key_restricts_the_output(tmp_path):
    pairs, evaluation, _ = build_debian_docs({"doc_root": str(write_doc_tree(tmp_path)), "eval_fraction": _fraction_splitting_the_fixture(),
                                              "languages": ["de"]}, tmp_path / "cache")
    assert set(pairs["passage_language"]) == {"de"} and set(pairs["language"]) == {"de", "en"}
    assert set(evaluation.queries["language"]) == {"de"}
    with pytest.raises(DataValidationError, match="found: \\['de', 'en'\\]"):
        build_debian_docs({"doc_root": str(tmp_path), "languages": ["ru"]}, tmp_path / "cache")


def test_handbook_and_installation_guide_shapes():
    # The handbook: <div class="para"> paragraphs, link lines and sidebars inside a section.
    handbook = """<div class="section"><div class="titlepage"><div><div><h2 class="title"><a xmlns="" id="sect.windows-emulation"></a>13.8. Emulating Windows: Wine</h2></div></div></div><a id="id-1.16.11.2" class="indexterm"></a><div class="para">
    The most well-known among them is Wine. <div xmlns="" class="url">&rarr; <a href="https://www.winehq.org/">https://www.winehq.org/</a></div>
    </div><div class="para">Install it with <pre class="screen"><code class="command">apt install wine</code></pre></div><div class="sidebar"><div class="titlepage"><div><div><p class="title"><strong>TIP CrossOver</strong></p></div></div></div><div class="para">A commercial version.</div></div></div>"""
    section, = parse_sections(handbook)
    assert (section.anchor, section.heading) == ("sect.windows-emulation", "Emulating Windows: Wine")
    assert [(p.text, p.before_code) for p in section.paragraphs] == [("The most well-known among them is Wine.", False), ("Install it with", True)]
    assert section.code_blocks == 1
    # The installation guide: HTML 4 (unclosed <br>, <a name>), a sentence cut by a code listing.
    guide = """<div class="sect1"><div class="titlepage"><div><div><h2 class="title">
    <a name="hardware-supported"></a>2.1. Supported Hardware</h2></div></div></div><p>Use the<br>
    </p><pre class="screen">lsb_release -a</pre><p>command.</p><div class="sect2"><div class="titlepage"><div><div><h3 class="title">
    <a name="idm186"></a>2.1.1. Supported Architectures</h3></div></div></div><p>Nine architectures.</p></div></div>"""
    inner, outer = parse_sections(guide)
    assert (inner.anchor, inner.parent_anchors, inner.heading) == ("idm186", ("hardware-supported",), "Supported Architectures")
    assert (outer.anchor, outer.code_blocks) == ("hardware-supported", 1)
    assert [(p.text, p.before_code, p.after_code) for p in outer.paragraphs] == [("Use the", True, False), ("command.", False, True)]


def test_undecodable_page_is_an_error_naming_the_file(tmp_path):
    root = write_doc_tree(tmp_path)
    broken = root / "usr/share/debian-reference/ch02.de.html"
    # A Latin-1 byte in a UTF-8 page: the page cannot be decoded.
    broken.write_bytes(REFERENCE_PAGE.format(**REFERENCE["de"]).encode("utf-8").replace(b"Paketkonfiguration", b"Paketkonfigurati\xf6n"))
    with pytest.raises(DataValidationError) as error:
        build_debian_docs({"doc_root": str(root)}, tmp_path / "cache")
    assert str(broken) in str(error.value) and "UTF-8" in str(error.value) and error.value.field == "html"


def test_tree_without_manuals_is_an_error(tmp_path):
    (tmp_path / "usr/share/doc").mkdir(parents=True)
    with pytest.raises(DataValidationError, match="no Debian manual HTML pages"):
        build_debian_docs({"doc_root": str(tmp_path)}, tmp_path / "cache")
