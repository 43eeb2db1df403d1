"""The default source: man pages in several languages and scripts, parsed from groff text."""

import gzip
from collections import Counter
from pathlib import Path

from retrofit_pipeline.sources.debian_manpages import build_pairs, is_evaluation_page, load_manpages, build_manpage_corpus
from retrofit_pipeline.sources.groff import parse_man, unescape

PAGES = {
    ("", "ls.1"): ("NAME", "ls \\- list directory contents", "DESCRIPTION",
                   "List information about the FILEs (the current directory by default).\n.PP\n"
                   "Sort entries alphabetically if none of \\fB\\-cftuvSUX\\fP nor \\fB\\-\\-sort\\fP is specified. Mandatory arguments to long options are mandatory for short options too."),
    ("de", "ls.1"): ("BEZEICHNUNG", "ls \\- Verzeichnisinhalte auflisten", "BESCHREIBUNG",
                     "Auflistung von Informationen über die DATEIen (Standardvorgabe ist das aktuelle Verzeichnis).\n.PP\n"
                     "Die Einträge werden alphabetisch sortiert, falls keine Option angegeben wurde. Die obligatorischen Argumente für Optionen sind für deren Kurz\\- und Langform gleich."),
    ("ru", "ls.1"): ("ИМЯ", "ls \\- выводит список файлов каталога", "ОПИСАНИЕ",
                     "Выводит информацию о ФАЙЛАХ (по умолчанию о текущем каталоге).\n.PP\nЭлементы сортируются по алфавиту. Обязательные аргументы для длинных параметров также обязательны и для коротких."),
    ("ja", "ls.1"): ("名前", "ls \\- ディレクトリの内容をリスト表示する", "説明",
                     "FILE (デフォルトは現在のディレクトリ) に関する情報を一覧表示します。\n.PP\n要素はアルファベット順でソートされます。長いオプションで必須となっている引数は短いオプションでも必須です。"),
    ("", "cp.1"): ("NAME", "cp \\- copy files and directories", "DESCRIPTION", "Copy SOURCE to DEST, or multiple SOURCE(s) to DIRECTORY."),
    ("de", "cp.1"): ("BEZEICHNUNG", "cp \\- Dateien und Verzeichnisse kopieren", "BESCHREIBUNG", "Kopiert QUELLE nach ZIEL oder mehrere QUELLEN in VERZEICHNIS."),
}


def write_man_tree(root: Path) -> Path:
    for (language, filename), (name_heading, name_line, description_heading, body) in PAGES.items():
        directory = root / language / "man1" if language else root / "man1"
        directory.mkdir(parents=True, exist_ok=True)
        text = f'.\\" comment\n.TH X 1\n.SH {name_heading}\n{name_line}\n.SH SYNOPSIS\n\\fBx\\fP [OPTION]\n.SH {description_heading}\n.PP\n{body}\n.SH "SEE ALSO"\nfoo(1)\n'
        (directory / f"{filename}.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    (root / "man1" / "dir.1.gz").write_bytes(gzip.compress(b".so man1/ls.1\n"))  # a link page: an alias, not a page
    return root


def test_unescape_turns_groff_into_text():
    assert unescape(r"\fB\-\-sort\fP and \(lqquotes\(rq \e") == "--sort and \u201cquotes\u201d \\"


def test_parse_sections_and_paragraphs():
    parsed = parse_man(".SH NAME\nls \\- list\n.SH DESCRIPTION\nFirst para.\n.PP\nSecond\npara.\n")
    assert [s.heading for s in parsed.sections] == ["NAME", "DESCRIPTION"]
    assert parsed.sections[1].paragraphs == ["First para.", "Second para."]


def test_load_pages_in_four_scripts(tmp_path):
    pages = load_manpages(write_man_tree(tmp_path))
    assert {(p.language, p.key) for p in pages} == {("en", "ls.1"), ("de", "ls.1"), ("ru", "ls.1"), ("ja", "ls.1"), ("en", "cp.1"), ("de", "cp.1")}
    ja = next(p for p in pages if p.language == "ja")
    assert ja.summary == "ディレクトリの内容をリスト表示する"
    assert ja.paragraphs[0].startswith("FILE (デフォルトは")


def test_pairs_cover_the_four_task_types(tmp_path):
    pairs = build_pairs(load_manpages(write_man_tree(tmp_path)))
    assert set(pairs["task_type"]) == {"summary_retrieval", "inverse_cloze", "bitext", "cross_lingual_retrieval"}
    bitext = pairs[(pairs.task_type == "bitext") & (pairs.language == "ru")].iloc[0]
    assert bitext["query"] == "выводит список файлов каталога" and bitext["positive"] == "list directory contents"
    cloze = pairs[(pairs.task_type == "inverse_cloze") & (pairs.language == "en")].iloc[0]
    assert cloze["query"].startswith("Sort entries alphabetically") and cloze["positive"].startswith("Mandatory arguments")


def test_evaluation_split_holds_out_whole_pages_in_every_language(tmp_path):
    root = write_man_tree(tmp_path)
    fraction = 0.8  # by the page-name hash this holds out ls.1 (0.74) and keeps cp.1 (0.83)
    held_out = {key for key in ("ls.1", "cp.1") if is_evaluation_page(key, fraction)}
    assert held_out == {"ls.1"}
    pairs, evaluation, stats = build_manpage_corpus(root, None, fraction)
    train_keys = {pid.split(":")[2] for pid in pairs["pair_id"]}
    eval_keys = {doc.split(":", 1)[1] for doc in evaluation.corpus["doc_id"]}
    assert eval_keys == held_out and not (train_keys & eval_keys)
    assert stats["pages_parsed"] == 6


def test_a_name_line_two_evaluation_pages_share_is_no_query_and_every_page_has_its_identity():
    """Two pages with one NAME line ("list directory contents" for ls.1 and dir.1, say) would each
    have one "right" answer for the same query: neither is a query; both passages stay."""
    from retrofit_pipeline.sources.debian_manpages import ManPage, build_evaluation_set

    pages = [ManPage("ls.1", "en", "list directory contents", ("List information about the FILEs.",), "ls"),
             ManPage("dir.1", "en", "List  directory contents", ("Equivalent to ls -C -b: lists the FILEs in columns.",), "dir"),
             ManPage("cp.1", "en", "copy files and directories", ("Copy SOURCE to DEST.",), "cp"),
             ManPage("cp.1", "de", "Dateien und Verzeichnisse kopieren", ("Kopiert QUELLE nach ZIEL.",), "cp-de")]
    dropped = Counter()
    evaluation = build_evaluation_set(pages, dropped)
    assert evaluation.queries["text"].tolist() == ["copy files and directories", "Dateien und Verzeichnisse kopieren"]
    assert len(evaluation.corpus) == 4 and dropped["eval_ambiguous_query"] == 2
    assert evaluation.corpus.set_index("doc_id")["identity"].to_dict()["de:cp.1"] == "manpages:cp.1"
    assert evaluation.queries["task_type"].unique().tolist() == ["summary_retrieval"]
    assert not evaluation.queries["text"].str.lower().duplicated().any()
