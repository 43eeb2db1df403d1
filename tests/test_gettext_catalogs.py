"""gettext catalogs as bitext: .mo files written here in the standard binary format, in a
usr/share/locale tree with German (Latin), Russian (Cyrillic) and Japanese (Han/Kana) catalogs."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from retrofit_pipeline.dedup import normalize_text
from retrofit_pipeline.schema import DataValidationError
from retrofit_pipeline.sources.gettext_catalogs import (
    build_gettext_catalogs, clean_message, is_held_out, locale_language, read_mo, singular_form,
)

HEADER = "Content-Type: text/plain; charset={charset}\nPlural-Forms: {plural_forms}\n"
PLURAL_FORMS = {
    "de": "nplurals=2; plural=(n != 1);",
    "ru": "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);",
    "ja": "nplurals=1; plural=0;",
    "ar": "nplurals=6; plural=n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 : n%100>=11 ? 4 : 5;",
}
PLURAL = ("%d file was removed", "%d files were removed")
CONTEXT = ("menu", "Open a new window")

# English msgid -> translation per language. A tuple key is (msgid, msgid_plural) or (msgctxt, msgid).
CATALOGS = {
    "de": {
        "cannot open '%s' for reading": "„%s“ kann nicht zum Lesen geöffnet werden",
        "_Save the current file": "Die aktuelle Datei _speichern",
        "%1$s: the option '%2$c' is not valid\n": "%1$s: die Option „%2$c“ ist ungültig\n",
        "Print the version number and exit": "Print the version number and exit",  # untranslated
        "Quit": "Beenden",  # a label, under 3 words
        "Copying the files...": "Dateien werden kopiert …",
        # A training-side message whose translation equals a held-out one's (at eval_fraction 0.5).
        "Unable to open %s for reading": "„%s“ kann nicht zum Lesen geöffnet werden",
        PLURAL: ("%d Datei wurde entfernt", "%d Dateien wurden entfernt"),
        CONTEXT: "Ein neues Fenster öffnen",
    },
    "ru": {
        "cannot open '%s' for reading": "не удаётся открыть «%s» для чтения",
        "_Save the current file": "_Сохранить текущий файл",
        "%1$s: the option '%2$c' is not valid\n": "%1$s: параметр «%2$c» недопустим\n",  # 2 words: too short
        "Show all hidden files in the list": "Show all the hidden files in the list",  # English left in: wrong script
        PLURAL: ("%d файл был удалён", "%d файла были удалены", "%d файлов было удалено"),
        CONTEXT: "Открыть новое окно",
    },
    "ja": {
        "cannot open '%s' for reading": "「%s」を読み込み用に開けません",
        "_Save the current file": "現在のファイルを保存する(_S)",
        "%1$s: the option '%2$c' is not valid\n": "%1$s: オプション '%2$c' は無効です\n",
        "Open the selected file": "ファイル",  # 4 characters in an unspaced script: too short
        PLURAL: ("%d 個のファイルを削除しました",),
        CONTEXT: "新しいウィンドウを開く",
    },
}


def _key_bytes(key) -> bytes:
    if isinstance(key, tuple) and key == CONTEXT:
        return f"{key[0]}\x04{key[1]}".encode("utf-8")
    if isinstance(key, tuple):
        return "\x00".join(key).encode("utf-8")
    return key.encode("utf-8")


def write_mo(path: Path, entries: list[tuple[bytes, bytes]], big_endian: bool = False) -> Path:
    """The GNU .mo format: magic, revision 0, N, offsets of the msgid and msgstr tables (N pairs
    of length and offset each), no hash table, then the NUL-terminated strings (msgids sorted)."""
    endian = ">" if big_endian else "<"
    entries = sorted(entries)
    count = len(entries)
    originals_at, translations_at = 28, 28 + 8 * count
    data_at = translations_at + 8 * count
    tables, blob = [b"", b""], b""
    for column in (0, 1):
        for entry in entries:
            tables[column] += struct.pack(endian + "2I", len(entry[column]), data_at + len(blob))
            blob += entry[column] + b"\x00"
    header = struct.pack(endian + "7I", 0x950412DE, 0, count, originals_at, translations_at, 0, data_at)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables[0] + tables[1] + blob)
    return path


def catalog_entries(language: str, messages: dict, charset: str = "UTF-8") -> list[tuple[bytes, bytes]]:
    header = HEADER.format(charset=charset, plural_forms=PLURAL_FORMS[language]).encode(charset)
    entries = [(b"", header)]
    for key, value in messages.items():
        forms = value if isinstance(value, tuple) else (value,)
        entries.append((_key_bytes(key), "\x00".join(forms).encode(charset)))
    return entries


def write_locale_tree(root: Path) -> Path:
    for language, messages in CATALOGS.items():
        write_mo(root / language / "LC_MESSAGES" / "demo.mo", catalog_entries(language, messages))
    # The same German pair in a second package's catalog: kept once.
    write_mo(root / "de" / "LC_MESSAGES" / "other.mo", catalog_entries("de", {"cannot open '%s' for reading": CATALOGS["de"]["cannot open '%s' for reading"]}))
    # Locales that are skipped: an English variant, a modifier, a language without an ISO 639-1 code.
    for locale in ("en_GB", "ca@valencia", "ast"):
        write_mo(root / locale / "LC_MESSAGES" / "demo.mo", catalog_entries("de", {"cannot open '%s' for reading": "something else entirely here"}))
    return root


def test_read_mo_splits_contexts_and_plurals(tmp_path):
    path = write_mo(tmp_path / "ar.mo", catalog_entries("ar", {PLURAL: tuple(f"form {i}" for i in range(6)), CONTEXT: "x"}), big_endian=True)
    fields, messages, system_dependent = read_mo(path)
    assert fields["plural-forms"].startswith("nplurals=6") and system_dependent == 0
    plural = next(m for m in messages if m.msgid_plural)
    assert (plural.msgid, plural.msgid_plural, len(plural.forms)) == (*PLURAL, 6)
    assert singular_form(fields, plural.forms) == "form 1"  # Arabic's form 0 is for n=0
    context = next(m for m in messages if m.context)
    assert (context.context, context.msgid, context.msgid_plural) == ("menu", "Open a new window", None)


def test_catalog_in_a_legacy_charset_is_decoded(tmp_path):
    path = write_mo(tmp_path / "ja.mo", catalog_entries("ja", {"cannot open '%s' for reading": CATALOGS["ja"]["cannot open '%s' for reading"]}, charset="EUC-JP"))
    assert "「".encode("utf-8") not in path.read_bytes()
    _, messages, _ = read_mo(path)
    assert messages[0].forms == ("「%s」を読み込み用に開けません",)


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (GNU gettext) is not installed")
def test_reader_agrees_with_msgfmt(tmp_path):
    """A catalog compiled by GNU msgfmt itself (hash table, its own layout) reads the same."""
    po = tmp_path / "de.po"
    po.write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\nPlural-Forms: nplurals=2; plural=(n != 1);\\n"\n\n'
        'msgctxt "menu"\nmsgid "Open a new window"\nmsgstr "Ein neues Fenster öffnen"\n\n'
        'msgid "%d file was removed"\nmsgid_plural "%d files were removed"\nmsgstr[0] "%d Datei wurde entfernt"\nmsgstr[1] "%d Dateien wurden entfernt"\n\n'
        '#, fuzzy\nmsgid "A fuzzy entry is left out"\nmsgstr "Ein unscharfer Eintrag"\n',
        encoding="utf-8",
    )
    subprocess.run(["msgfmt", "-o", str(tmp_path / "de.mo"), str(po)], check=True)
    _, messages, _ = read_mo(tmp_path / "de.mo")
    assert sorted(((m.context, m.msgid, m.msgid_plural, m.forms) for m in messages), key=lambda entry: entry[1]) == [
        (None, "%d file was removed", "%d files were removed", ("%d Datei wurde entfernt", "%d Dateien wurden entfernt")),
        ("menu", "Open a new window", None, ("Ein neues Fenster öffnen",)),
    ]


@pytest.mark.parametrize("raw, cleaned", [
    ("%s: cannot open '%s'...\n", "cannot open"),
    ("%1$s: invalid option -- '%2$c'\n", "invalid option --"),
    ("_Save the current file", "Save the current file"),
    ("現在のファイルを保存する(_S)", "現在のファイルを保存する"),
    ("Co&py the files", "Copy the files"),
    ("{count} items in {0:>5} folders:", "items in folders"),
    ("100%% done, %<PRIu64> bytes left…", "100% done, bytes left"),
    ("LC_ALL is set to %(value)s", "LC_ALL is set to"),
    ("  -a, --all     do not ignore\n", "-a, --all do not ignore"),
])
def test_clean_message(raw, cleaned):
    assert clean_message(raw) == cleaned


@pytest.mark.parametrize("directory, code", [
    ("de", "de"), ("pt_BR", "pt-br"), ("zh_CN", "zh"), ("zh_TW", "zh-tw"), ("sr@latin", "sr-latn"),
    ("uz@cyrillic", "uz-cyrl"), ("nb_NO", "nb"), ("ca@valencia", None), ("en_GB", None), ("en@quot", None),
    ("de_CH", None), ("ast", None), ("fil", None),
])
def test_locale_directory_to_language(directory, code):
    assert locale_language(directory)[0] == code


def test_pairs_are_cleaned_and_filtered(tmp_path):
    root = write_locale_tree(tmp_path / "locale")
    pairs, _, stats = build_gettext_catalogs({"locale_root": str(root), "min_pairs_per_language": 1, "evaluation": False}, tmp_path)
    found = {(row.language, row.query, row.positive) for row in pairs.itertuples()}
    assert found == {
        ("de", "kann nicht zum Lesen geöffnet werden", "cannot open for reading"),
        ("de", "kann nicht zum Lesen geöffnet werden", "Unable to open for reading"),
        ("de", "Die aktuelle Datei speichern", "Save the current file"),
        ("de", "die Option ist ungültig", "the option is not valid"),
        ("de", "Dateien werden kopiert", "Copying the files"),
        ("de", "Datei wurde entfernt", "file was removed"),  # the n=1 form of a plural
        ("de", "Ein neues Fenster öffnen", "Open a new window"),  # context dropped from the text
        ("ru", "не удаётся открыть для чтения", "cannot open for reading"),
        ("ru", "Сохранить текущий файл", "Save the current file"),
        ("ru", "файл был удалён", "file was removed"),
        ("ru", "Открыть новое окно", "Open a new window"),
        ("ja", "を読み込み用に開けません", "cannot open for reading"),
        ("ja", "現在のファイルを保存する", "Save the current file"),
        ("ja", "オプション は無効です", "the option is not valid"),
        ("ja", "個のファイルを削除しました", "file was removed"),
        ("ja", "新しいウィンドウを開く", "Open a new window"),
    }
    assert set(pairs["task_type"]) == {"bitext"} and set(pairs["passage_language"]) == {"en"}
    assert set(pairs["domain"]) == {"ui-strings"} and set(pairs["source"]) == {"debian-gettext"}
    # One query identity per (language, message): the German message with two English sources is one query.
    assert pairs["pair_id"].is_unique and pairs["query_id"].nunique() == len(pairs) - 1
    assert pairs[pairs["query"] == "kann nicht zum Lesen geöffnet werden"]["query_id"].nunique() == 1
    drops = stats["drops"]
    assert drops["untranslated_same_as_english"] == 1 and drops["english_under_3_words"] == 1
    assert drops["wrong_script"] == 1 and drops["translation_too_short"] == 2 and drops["duplicate"] == 1
    assert stats["skipped_locales"] == {"ast": "no_iso_639_1_code", "ca@valencia": "locale_modifier", "en_GB": "english_variant"}
    assert stats["scripts"]["de"] == "Latin" and stats["scripts"]["ru"] == "Cyrillic" and stats["scripts"]["ja"] in ("Han", "Kana")


def test_evaluation_holds_out_english_messages_in_every_language(tmp_path):
    root = write_locale_tree(tmp_path / "locale")
    spec = {"locale_root": str(root), "min_pairs_per_language": 1, "min_eval_queries_per_language": 1, "eval_fraction": 0.5}
    pairs, evaluation, stats = build_gettext_catalogs(spec, tmp_path)
    # By the hash of the cleaned English text, 0.5 holds out these four and keeps the others.
    held_out = {"cannot open for reading", "Save the current file", "the option is not valid", "Copying the files"}
    assert {text for text in ("Open a new window", "file was removed", "Unable to open for reading") if is_held_out(text, 0.5)} == set()
    assert all(is_held_out(text, 0.5) for text in held_out)
    assert not set(pairs["positive"]) & held_out and set(pairs["positive"]) >= {"Open a new window", "file was removed"}
    # The German translation of "Unable to open ..." is also a held-out query: not trained on.
    assert "Unable to open for reading" not in set(pairs["positive"]) and stats["drops"]["query_is_an_evaluation_query"] == 1
    assert evaluation.languages == ["de", "ja", "ru"]
    for language in evaluation.languages:  # each language: its own copy of the whole held-out English corpus
        corpus = evaluation.corpus[evaluation.corpus.language == language]
        assert set(corpus["text"]) == held_out and corpus["doc_id"].str.startswith(f"{language}:").all()
        queries = evaluation.queries[evaluation.queries.language == language]
        assert queries["text"].map(normalize_text).is_unique
    answers = evaluation.qrels.merge(evaluation.queries, on="query_id").merge(evaluation.corpus, on="doc_id", suffixes=("_query", "_doc"))
    assert (answers["language_query"] == answers["language_doc"]).all()
    found = {(row.language_query, row.text_query, row.text_doc) for row in answers.itertuples()}
    assert found == {
        ("de", "kann nicht zum Lesen geöffnet werden", "cannot open for reading"),
        ("de", "Die aktuelle Datei speichern", "Save the current file"),
        ("de", "die Option ist ungültig", "the option is not valid"),
        ("de", "Dateien werden kopiert", "Copying the files"),
        ("ru", "не удаётся открыть для чтения", "cannot open for reading"),
        ("ru", "Сохранить текущий файл", "Save the current file"),
        ("ja", "を読み込み用に開けません", "cannot open for reading"),
        ("ja", "現在のファイルを保存する", "Save the current file"),
        ("ja", "オプション は無効です", "the option is not valid"),
    }
    assert stats["evaluation_queries_per_language"] == {"de": 4, "ja": 3, "ru": 2}
    assert build_gettext_catalogs({**spec, "evaluation": False}, tmp_path)[1] is None
    # A language with fewer held-out queries than the minimum gets no evaluation subset.
    _, evaluation, stats = build_gettext_catalogs({**spec, "min_eval_queries_per_language": 3}, tmp_path)
    assert evaluation.languages == ["de", "ja"] and stats["languages_without_evaluation"] == {"ru": 2}


def test_language_selection_and_cap(tmp_path):
    root = write_locale_tree(tmp_path / "locale")
    spec = {"locale_root": str(root), "languages": ["ru", "ja"], "max_pairs_per_language": 2, "evaluation": False}
    pairs, _, stats = build_gettext_catalogs(spec, tmp_path)
    assert pairs.groupby("language").size().to_dict() == {"ja": 2, "ru": 2}
    assert stats["drops"]["over_max_pairs_per_language"] == 2 + 3  # ru has 4 pairs, ja 5
    with pytest.raises(ValueError, match="no pairs for language"):
        build_gettext_catalogs({**spec, "languages": ["ko"]}, tmp_path)
    # By default a language needs min_pairs_per_language pairs (de has 7, ja 5, ru 4).
    pairs, _, stats = build_gettext_catalogs({"locale_root": str(root), "min_pairs_per_language": 5, "evaluation": False}, tmp_path)
    assert set(pairs["language"]) == {"de", "ja"} and stats["languages_below_min_pairs"] == {"ru": 4}


def test_corrupt_catalog_is_an_error_naming_the_file(tmp_path):
    root = write_locale_tree(tmp_path / "locale")
    broken = root / "ru" / "LC_MESSAGES" / "demo.mo"
    broken.write_bytes(broken.read_bytes()[:60])  # the string tables point past the end
    with pytest.raises(DataValidationError, match="past the end") as error:
        build_gettext_catalogs({"locale_root": str(root), "min_pairs_per_language": 1}, tmp_path)
    assert error.value.source == str(broken)
    broken.write_bytes(b"this is not a catalog at all, just text")
    with pytest.raises(DataValidationError, match="not a gettext .mo file") as error:
        read_mo(broken)
    assert error.value.source == str(broken)


def test_undecodable_message_names_row_and_field(tmp_path):
    entries = catalog_entries("de", {"cannot open '%s' for reading": "x"})
    entries[1] = (entries[1][0], b"kann nicht \xff\xfe")
    path = write_mo(tmp_path / "de.mo", entries)
    with pytest.raises(DataValidationError, match="not valid UTF-8") as error:
        read_mo(path)
    assert (error.value.source, error.value.row, error.value.field) == (str(path), 1, "msgstr")
