"""Bitext from the gettext message catalogs that Debian packages ship (user-interface strings).

Programs such as coreutils, tar, apt, dpkg, nano or GTK carry their translated messages as
compiled gettext catalogs, usr/share/locale/<locale>/LC_MESSAGES/<domain>.mo: every English
message (msgid) with its translation (msgstr), written by the packages' translation teams.
Together they cover dozens of languages in many scripts. The catalogs are under the licences of
their packages (GPL-2+ or GPL-3+ for most; LGPL for glibc, GLib and GTK; ISC for sudo; BSD-2-clause
for debconf; see each package's /usr/share/doc/<package>/copyright and the README).

Pairs (task_type "bitext", domain "ui-strings"): query = the translated message (language X),
positive = its English msgid, both cleaned for a text encoder: printf/Python format placeholders,
keyboard accelerators (_File, &File, "(_F)"), line breaks and trailing colons/ellipses removed.
A msgctxt only disambiguates and is dropped; a plural entry gives its singular msgid with the form
the catalog's Plural-Forms rule uses for n=1. Rows that share a translated message (one German text
for two English wordings) share a query_id: one query with several positives. A pair is kept when
the English message has >= 3 words, the translation >= 3 words (>= 6 characters in scripts
written without spaces: Han, Kana, Thai, ...), it differs from the English
(else untranslated), and is written in its language's script (an English leftover in a Russian
catalog is not a translation). Fuzzy entries cannot be seen in a .mo file: msgfmt leaves them out
unless --use-fuzzy, and the two rules above catch what such leftovers usually look like. Each
rule's drops are counted in the statistics. The reverse direction (English -> translation) is not
emitted: it repeats the same alignment with the roles swapped, and parallel data added little in
the paper; the held-out task here is X -> English. iso-codes (translated country, language and
currency names) was checked and left out: 95% of its names are under 3 words, and multi-name
entries ("Church Slavic; Old Slavonic; ...") are often translated only in part.

Locale directory -> language code: the bare ISO 639-1 code (de, ru, ja); pt_BR -> pt-br,
zh_CN/zh_Hans -> zh, zh_TW/zh_Hant -> zh-tw, nb_NO -> nb, @latin / @cyrillic ->
-latn / -cyrl (sr@latin -> sr-latn). Skipped and counted: English variants (en_GB, en@quot: not
bitext), other regional variants (de_CH, zh_HK, bn_IN, pa_PK: near copies or another script of a kept
locale), other modifiers (ca@valencia: a near copy of ca), codes without ISO 639-1 (ast, fil).

Held-out split: by a hash of the cleaned English message (debian_manpages.is_evaluation_page), so
an English message and all its translations are on one side. The evaluation task per language
is bitext mining: each held-out translated message must find its English message among all
held-out English messages. The evaluation scores each (domain, language) subset against the corpus
rows of that domain and language, so each language gets its own copy of the English corpus,
labelled with that language (doc ids "<language>:en:<hash>").
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from gettext import c2py
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..dedup import normalize_text
from ..schema import (
    ISO_639_1, DataValidationError, EvaluationSet, derived_query_id, normalize_language, validate_evaluation_set,
    validate_pairs,
)
from .debian_manpages import MAX_PASSAGE_CHARS, is_evaluation_page
from .registry import fetch_debian_packages

SOURCE_NAME = "debian-gettext"
DOMAIN = "ui-strings"

# Twenty packages whose catalogs together cover ~80 languages in Latin, Cyrillic, Greek, Arabic,
# Hebrew, Han, Kana, Hangul, Devanagari, Thai, Bengali, Tamil, ... scripts, chosen for full sentences
# (error messages, option help, setting descriptions) rather than labels. GNU tools that mostly repeat
# coreutils' gnulib messages (findutils, diffutils) are left out; the two GNOME packages are in for
# Hebrew, Arabic and the Indic languages, which the command-line tools barely translate.
DEFAULT_PACKAGES = [
    "coreutils", "tar", "grep", "sed", "bash", "apt", "dpkg", "aptitude-common", "debconf-i18n",
    "util-linux-locales", "e2fsprogs-l10n", "gnupg-l10n", "wget", "nano", "sudo", "libc-l10n",
    "libglib2.0-data", "libgtk-3-common", "gnome-control-center-data", "nautilus-data",
]
DEFAULT_EVAL_FRACTION = 0.15  # >= 300 held-out queries in 70 of the 79 default languages (Hebrew: ~260)
DEFAULT_MIN_PAIRS_PER_LANGUAGE = 1000
DEFAULT_MIN_EVAL_QUERIES_PER_LANGUAGE = 100
MIN_WORDS = 3
MIN_UNSPACED_CHARACTERS = 6
MAX_MESSAGE_CHARS = MAX_PASSAGE_CHARS  # longer messages (whole --help screens) are dropped, not cut:
# truncating the two sides independently would leave texts that are no longer translations.

# Locales kept with a region or script suffix; any other region or @modifier is skipped.
_LOCALE_CODES = {
    "pt_BR": "pt-br", "zh_CN": "zh", "zh_Hans": "zh", "zh_TW": "zh-tw", "zh_Hant": "zh-tw", "nb_NO": "nb",
}
_SCRIPT_MODIFIERS = {"latin": "latn", "cyrillic": "cyrl"}
_UNSPACED_SCRIPTS = frozenset({"Han", "Kana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan"})

_MO_MAGIC = 0x950412DE
_PRINTF_RE = re.compile(
    r"%(?:\d+\$)?[-+ #0'I]*(?:\d+|\*(?:\d+\$)?)?(?:\.(?:\d+|\*(?:\d+\$)?))?(?:hh|ll|[hlLqjzZt])?[diouxXeEfFgGaAcspnmCS]"
    r"|%<[A-Za-z0-9_]+>"  # <PRIu64>-style system-dependent conversions
    r"|%\([A-Za-z_]\w*\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"  # Python %(name)s
)
_BRACE_RE = re.compile(r"\{[A-Za-z_0-9]*(?:[!:][^{}]*)?\}")  # Python/C# {name}, {0}, {0:>5}
_BRACKETED_ACCELERATOR_RE = re.compile(r"\s*[(（][_&][^\W_][)）]")  # CJK style "ファイル(_F)"
_UNDERSCORE_ACCELERATOR_RE = re.compile(r"(?<!\w)_(?=[^\W_])")  # GTK "_File" (not LC_ALL)
_MSGID_MNEMONIC_RE = re.compile(r"(?<!\S)_[^\W_]")  # "Open in New _Tab"
_ANY_MNEMONIC_RE = re.compile(r"_(?=[^\W_])")
_AMPERSAND_ACCELERATOR_RE = re.compile(r"&(?!#?\w+;)(?=[^\W_])")  # Qt/mc "&File", "Co&py" (not &amp;)
_EMPTY_QUOTES_RE = re.compile(r"[`'\"‘’‚“”„«»‹›「『]\s*[`'\"‘’“”«»‹›」』]|\(\s*\)|\[\s*\]|<\s*>")
_BIDI_MARKS = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # left at the ends by removed placeholders
_LEADING_JUNK = " :;,，、：；" + _BIDI_MARKS
_TRAILING_JUNK = " :;,，、：；…" + _BIDI_MARKS
_SPACE_BEFORE_CLOSING_RE = re.compile(r"\s+(?=[.,;](?:\s|$))|\s+(?=[)\]])|(?<=[(\[])\s+")  # "the file ." -> "the file."
_WORD_RE = re.compile(r"\S*[^\W\d_]\S*")
_PERCENT_SENTINEL = "\uE000"


@dataclass(frozen=True)
class CatalogMessage:
    """One entry of a .mo file: context and plural msgid (if any) and the translated forms."""

    context: str | None
    msgid: str
    msgid_plural: str | None
    forms: tuple[str, ...]
    index: int


# ---------------------------------------------------------------------------------------------
# Reading .mo files


def _header_fields(header: str) -> dict[str, str]:
    fields = {}
    for line in header.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def _charset(fields: dict[str, str]) -> str:
    match = re.search(r"charset=([^\s;]+)", fields.get("content-type", ""))
    charset = match.group(1) if match else "UTF-8"
    return "UTF-8" if charset.upper() == "CHARSET" else charset  # an unfilled template header


def read_mo(path: Path) -> tuple[dict[str, str], list[CatalogMessage], int]:
    """Parses a compiled gettext catalog: (header fields, messages, system-dependent strings left out).

    The format: magic, revision, N, offset of the original-string table, offset of the translation
    table; each table holds N (length, offset) pairs. Strings are decoded with the header's charset.
    Revision 1 files can also hold "system-dependent" strings (<PRIu64>) in a separate table;
    like Python's gettext we read the N static strings and report how many others there were."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 28:
        raise DataValidationError(str(path), "header", "magic", f"too short for a .mo file ({len(data)} bytes)")
    for endian in ("<", ">"):
        if struct.unpack(endian + "I", data[:4])[0] == _MO_MAGIC:
            break
    else:
        raise DataValidationError(str(path), "header", "magic", f"not a gettext .mo file (magic {data[:4].hex()})")
    revision, count, originals_at, translations_at = struct.unpack(endian + "4I", data[4:20])
    if revision >> 16 > 1:
        raise DataValidationError(str(path), "header", "revision", f"unsupported .mo major revision {revision >> 16}")
    system_dependent = 0
    if revision & 0xFFFF and len(data) >= 40:  # minor revision 1: the count sits at byte 36
        system_dependent = struct.unpack(endian + "I", data[36:40])[0]

    def table_entry(table_at: int, index: int, field: str) -> bytes:
        start = table_at + 8 * index
        if start + 8 > len(data):
            problem = f"string table entry at byte {start} is past the end of the file ({len(data)} bytes)"
            raise DataValidationError(str(path), index, field, problem)
        length, offset = struct.unpack(endian + "2I", data[start:start + 8])
        if offset + length > len(data):
            problem = f"string at bytes {offset}..{offset + length} is past the end of the file ({len(data)} bytes)"
            raise DataValidationError(str(path), index, field, problem)
        return data[offset:offset + length]

    raw = [(table_entry(originals_at, i, "msgid"), table_entry(translations_at, i, "msgstr")) for i in range(count)]
    header_bytes = next((msgstr for msgid, msgstr in raw if msgid == b""), b"")
    fields = _header_fields(header_bytes.decode("utf-8", errors="replace"))
    charset = _charset(fields)
    try:
        "".encode(charset)
    except LookupError as error:
        raise DataValidationError(str(path), "header", "charset", f"unknown charset {charset!r}") from error

    messages = []
    for index, (msgid_bytes, msgstr_bytes) in enumerate(raw):
        if msgid_bytes == b"":
            continue
        texts = []
        for field, value in (("msgid", msgid_bytes), ("msgstr", msgstr_bytes)):
            try:
                texts.append(value.decode(charset))
            except UnicodeDecodeError as error:
                problem = f"not valid {charset} (byte {value[error.start]:#04x} at offset {error.start})"
                raise DataValidationError(str(path), index, field, problem) from error
        msgid, msgstr = texts
        context, sep, msgid = msgid.rpartition("\x04")  # msgctxt "\x04" msgid
        singular, _, plural = msgid.partition("\x00")  # msgid "\x00" msgid_plural
        messages.append(CatalogMessage(context if sep else None, singular, plural or None, tuple(msgstr.split("\x00")), index))
    return fields, messages, system_dependent


def singular_form(fields: dict[str, str], forms: tuple[str, ...]) -> str:
    """The translated form used for n=1, from the catalog's Plural-Forms rule (Arabic's form 0
    is for n=0, for example); form 0 if the rule is missing or not understood."""
    index = _singular_index(fields.get("plural-forms", ""))
    return forms[index] if index < len(forms) else forms[0]


@lru_cache(maxsize=256)
def _singular_index(plural_forms: str) -> int:
    match = re.search(r"plural\s*=\s*([^;]+)", plural_forms)
    if not match:
        return 0
    try:
        return int(c2py(match.group(1).strip())(1))
    except (ValueError, SyntaxError, RecursionError, TypeError):
        return 0


# ---------------------------------------------------------------------------------------------
# Languages and scripts


def locale_language(directory: str) -> tuple[str | None, str]:
    """The language code of a locale directory name, or None and the reason it is skipped."""
    name = directory.split(".")[0]  # "de.UTF-8" -> "de"
    name, _, modifier = name.partition("@")
    language = name.split("_")[0]
    if language == "en":
        return None, "english_variant"
    if language not in ISO_639_1:
        return None, "no_iso_639_1_code"
    if modifier:
        if modifier in _SCRIPT_MODIFIERS and "_" not in name:
            return f"{language}-{_SCRIPT_MODIFIERS[modifier]}", "kept"
        return None, "locale_modifier"
    if "_" in name:
        code = _LOCALE_CODES.get(name)
        return (code, "kept") if code else (None, "regional_variant")
    return language, "kept"


@lru_cache(maxsize=65536)
def character_script(character: str) -> str | None:
    """The script of a letter ("Latin", "Cyrillic", "Han", "Kana", "Hangul", ...), None otherwise."""
    if not unicodedata.category(character).startswith("L"):
        return None
    words = unicodedata.name(character, "").split()
    if not words:
        return None
    first = words[0]
    if first in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1:
        first = words[1]
    if first == "CJK":
        return "Han"
    if first in ("HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"):
        return "Kana"
    return first.title()


def script_counts(text: str) -> Counter:
    counts = Counter(map(character_script, text))  # counted in C; non-letters (None) dropped after
    counts.pop(None, None)
    return counts


def dominant_script(counts: Counter) -> str | None:
    return counts.most_common(1)[0][0] if counts else None


def _same_writing_system(script: str) -> frozenset[str]:
    """Japanese mixes Han and Kana, Korean can use Han: a message in either is in the language's script."""
    if script in ("Han", "Kana"):
        return frozenset({"Han", "Kana"})
    if script == "Hangul":
        return frozenset({"Hangul", "Han"})
    return frozenset({script})


# ---------------------------------------------------------------------------------------------
# Cleaning


def has_mnemonic(msgid: str) -> bool:
    """A GTK-style msgid with one accelerator underscore, at the start of a word ("Open in New _Tab")."""
    return msgid.count("_") == 1 and _MSGID_MNEMONIC_RE.search(msgid) is not None


@lru_cache(maxsize=262144)
def clean_message(text: str, mnemonic: bool = False) -> str:
    """A message as plain text: no format placeholders, accelerators, line breaks, leading or
    trailing colons and ellipses ("%s: cannot open '%s'...\\n" -> "cannot open"). With `mnemonic`
    (the msgid has one), a translation's single underscore before a letter goes wherever it is:
    scripts without spaces put it mid-word ("ดูโปรแกรม_ทั้งหมด")."""
    text = text.replace("%%", _PERCENT_SENTINEL)
    text = _PRINTF_RE.sub(" ", text)
    text = _BRACE_RE.sub(" ", text)
    text = text.replace(_PERCENT_SENTINEL, "%")
    text = _BRACKETED_ACCELERATOR_RE.sub("", text)
    if mnemonic and text.count("_") == 1:
        text = _ANY_MNEMONIC_RE.sub("", text)
    text = _UNDERSCORE_ACCELERATOR_RE.sub("", text)
    text = _AMPERSAND_ACCELERATOR_RE.sub("", text)
    text = " ".join(text.split())  # \n, \t and runs of spaces
    text = " ".join(_EMPTY_QUOTES_RE.sub(" ", text).split())
    text = _SPACE_BEFORE_CLOSING_RE.sub("", text)
    while True:  # "…", "..." and colons can alternate at the end ("Saving...:")
        stripped = text.strip(_LEADING_JUNK).rstrip(_TRAILING_JUNK)
        while stripped.endswith("..."):
            stripped = stripped[:-3].rstrip(_TRAILING_JUNK)
        if stripped == text:
            return unicodedata.normalize("NFC", text)
        text = stripped


@lru_cache(maxsize=262144)
def word_count(text: str) -> int:
    """Words that contain a letter ("-a, --all do not" has 4; a lone "-" or "|" is no word)."""
    return len(_WORD_RE.findall(text))


def is_long_enough(text: str, script: str | None) -> bool:
    if script in _UNSPACED_SCRIPTS:
        return sum(1 for ch in text if not ch.isspace()) >= MIN_UNSPACED_CHARACTERS
    return word_count(text) >= MIN_WORDS


# ---------------------------------------------------------------------------------------------
# From catalogs to candidate pairs


@dataclass
class _Candidate:
    language: str
    query: str
    english: str
    script: str | None
    scripts: frozenset


def catalog_files(locale_root: Path) -> list[Path]:
    return sorted(p for p in Path(locale_root).glob("*/LC_MESSAGES/*.mo") if p.is_file())


def collect_candidates(locale_root: Path, languages: list[str] | None, drops: Counter, stats: dict) -> list[_Candidate]:
    """Every message of every kept locale that passes the per-message rules (counted in `drops`)."""
    candidates: list[_Candidate] = []
    skipped_locales: dict[str, str] = {}
    skipped_catalogs: Counter = Counter()
    files = catalog_files(locale_root)
    if not files:
        raise FileNotFoundError(f"{locale_root}: no gettext catalogs (<locale>/LC_MESSAGES/*.mo) found")
    messages_read = system_dependent = 0
    for path in tqdm(files, desc="read gettext catalogs", leave=False, mininterval=2):
        directory = path.parent.parent.name
        language, reason = locale_language(directory)
        if language is None:
            skipped_locales[directory] = reason
            skipped_catalogs[reason] += 1
            continue
        if languages is not None and language not in languages:
            continue
        fields, messages, sysdep = read_mo(path)
        messages_read += len(messages)
        system_dependent += sysdep
        for message in messages:
            translation = singular_form(fields, message.forms)
            if not translation.strip():
                drops["untranslated_empty"] += 1
                continue
            english = clean_message(message.msgid)
            if word_count(english) < MIN_WORDS:
                drops["english_under_3_words"] += 1
                continue
            query = clean_message(translation, has_mnemonic(message.msgid))
            if len(english) > MAX_MESSAGE_CHARS or len(query) > MAX_MESSAGE_CHARS:
                drops["longer_than_600_chars"] += 1
                continue
            counts = script_counts(query)
            script = dominant_script(counts)
            if not is_long_enough(query, script):
                drops["translation_too_short"] += 1
                continue
            if normalize_text(query) == normalize_text(english):
                drops["untranslated_same_as_english"] += 1
                continue
            candidates.append(_Candidate(language, query, english, script, frozenset(counts)))
    stats["catalog_files"] = len(files)
    stats["messages_read"] = messages_read
    stats["system_dependent_strings_not_read"] = system_dependent
    stats["skipped_locales"] = dict(sorted(skipped_locales.items()))
    stats["catalogs_skipped_by_reason"] = dict(sorted(skipped_catalogs.items()))
    return candidates


def language_scripts(candidates: list[_Candidate]) -> dict[str, str]:
    """Each language's script: the script most of its messages are mostly written in."""
    totals: dict[str, Counter] = {}
    for candidate in candidates:
        totals.setdefault(candidate.language, Counter())[candidate.script] += 1
    return {language: counts.most_common(1)[0][0] for language, counts in sorted(totals.items())}


def filter_candidates(candidates: list[_Candidate], scripts: dict[str, str], drops: Counter) -> list[_Candidate]:
    """Drops translations with no letter in their language's script (English left in a Russian
    catalog) when that script is not Latin, then duplicate (language, message, English) triples."""
    kept, seen = [], set()
    for candidate in candidates:
        script = scripts[candidate.language]
        if script != "Latin" and not (candidate.scripts & _same_writing_system(script)):
            drops["wrong_script"] += 1
            continue
        key = (candidate.language, normalize_text(candidate.query), normalize_text(candidate.english))
        if key in seen:
            drops["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(candidate)
    return kept


# ---------------------------------------------------------------------------------------------
# Pairs and the held-out evaluation set


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def is_held_out(english: str, eval_fraction: float) -> bool:
    """The split key is the English message as normalize_text sees it, so messages that differ
    only in case or punctuation ("File not found." / "file not found") fall on one side."""
    return is_evaluation_page(normalize_text(english), eval_fraction)


def build_pairs(candidates: list[_Candidate]) -> pd.DataFrame:
    rows = []
    for c in candidates:
        identity = message_identity(normalize_text(c.english))
        rows.append({
            "pair_id": f"bitext:{c.language}:{_digest(c.query, c.english)}",
            "query_id": derived_query_id(c.language, c.query),
            "query": c.query, "positive": c.english,
            "language": c.language, "passage_language": "en",
            # The positive is the English message itself: the message is both document and passage.
            "task_type": "bitext", "domain": DOMAIN, "source": SOURCE_NAME, "identity": identity, "passage_identity": identity,
        })
    return pd.DataFrame(rows)


def cap_per_language(pairs: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """At most `limit` pairs per language, a hash-ordered sample (not the first catalogs' messages)."""
    if not limit:
        return pairs
    order = pairs["pair_id"].map(lambda pair_id: hashlib.sha1(pair_id.encode("utf-8")).hexdigest())
    pairs = pairs.assign(_order=order).sort_values(["language", "_order"])
    return pairs.groupby("language", sort=True).head(limit).drop(columns="_order").sort_index().reset_index(drop=True)


def message_identity(english_key: str) -> str:
    """An English message and all its translations ("ui-strings:<hash of the normalized msgid>")."""
    return f"{DOMAIN}:{_digest(english_key)}"


def build_evaluation_set(candidates: list[_Candidate], languages: list[str]) -> EvaluationSet:
    """Per language: each distinct held-out translated message -> its English message(s), among
    every held-out English message (one copy of that corpus per language; see module docstring)."""
    english_texts: dict[str, str] = {}  # normalized -> first spelling
    for candidate in candidates:
        english_texts.setdefault(normalize_text(candidate.english), candidate.english)
    corpus_rows, query_rows, qrel_rows = [], [], []
    for language in languages:
        queries: dict[str, tuple[str, set[str]]] = {}  # normalized query -> (text, English keys)
        for candidate in candidates:
            if candidate.language == language:
                entry = queries.setdefault(normalize_text(candidate.query), (candidate.query, set()))
                entry[1].add(normalize_text(candidate.english))
        if not queries:
            continue
        for key, text in english_texts.items():
            corpus_rows.append({"doc_id": f"{language}:en:{_digest(key)}", "language": language, "domain": DOMAIN, "text": text,
                                "identity": message_identity(key)})
        for query_key, (text, english_keys) in queries.items():
            query_id = f"q:{language}:{_digest(query_key)}"
            query_rows.append({"query_id": query_id, "language": language, "domain": DOMAIN, "text": text,
                               "identity": message_identity(sorted(english_keys)[0]), "task_type": "bitext"})
            qrel_rows.extend({"query_id": query_id, "doc_id": f"{language}:en:{_digest(key)}", "score": 1} for key in sorted(english_keys))
    return EvaluationSet(pd.DataFrame(corpus_rows), pd.DataFrame(query_rows), pd.DataFrame(qrel_rows))


def _requested_languages(spec: dict) -> list[str] | None:
    if spec.get("languages") is None:
        return None
    return [normalize_language(code, f"{SOURCE_NAME} spec", "languages") for code in spec["languages"]]


def build_gettext_catalogs(spec: dict, cache_dir: Path) -> tuple[pd.DataFrame, EvaluationSet | None, dict]:
    """Bitext pairs from the packages' gettext catalogs, their held-out split and statistics.

    Spec keys: packages (DEFAULT_PACKAGES), locale_root (an unpacked usr/share/locale tree; skips
    the download), languages (default: every language with >= min_pairs_per_language training
    pairs), min_pairs_per_language (1000), eval_fraction (0.15), evaluation (true), min_eval_queries_per_language
    (100: fewer held-out queries than that give no evaluation subset for the language),
    max_pairs_per_language (no limit)."""
    locale_root = spec.get("locale_root")
    if locale_root is None:
        packages = list(spec.get("packages", DEFAULT_PACKAGES))
        locale_root = fetch_debian_packages(packages, Path(cache_dir) / "gettext-catalogs") / "usr" / "share" / "locale"
    locale_root = Path(locale_root)
    if not locale_root.is_dir():
        raise FileNotFoundError(f"gettext locale root {locale_root} does not exist")
    requested = _requested_languages(spec)
    eval_fraction = float(spec.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    min_pairs = int(spec.get("min_pairs_per_language", DEFAULT_MIN_PAIRS_PER_LANGUAGE))
    min_eval_queries = int(spec.get("min_eval_queries_per_language", DEFAULT_MIN_EVAL_QUERIES_PER_LANGUAGE))
    with_evaluation = bool(spec.get("evaluation", True))
    label = f"{SOURCE_NAME} ({locale_root})"

    drops: Counter = Counter()
    stats: dict = {}
    candidates = collect_candidates(locale_root, requested, drops, stats)
    scripts = language_scripts(candidates)
    candidates = filter_candidates(candidates, scripts, drops)
    split = {english: with_evaluation and is_held_out(english, eval_fraction) for english in {c.english for c in candidates}}
    held_out = [c for c in candidates if split[c.english]]
    held_out_queries = {(c.language, normalize_text(c.query)) for c in held_out}
    train = []
    for candidate in candidates:
        if split[candidate.english]:
            continue
        if (candidate.language, normalize_text(candidate.query)) in held_out_queries:
            drops["query_is_an_evaluation_query"] += 1  # the same translation of another English message
            continue
        train.append(candidate)

    train_per_language = Counter(c.language for c in train)
    if requested is not None:
        missing = [code for code in requested if train_per_language[code] == 0]
        if missing:
            raise ValueError(f"{label}: no pairs for language(s) {missing}; languages with pairs: {sorted(train_per_language)}")
        languages = requested
    else:
        languages = sorted(code for code, count in train_per_language.items() if count >= min_pairs)
        stats["languages_below_min_pairs"] = {code: count for code, count in sorted(train_per_language.items()) if count < min_pairs}
    if not languages:
        raise ValueError(f"{label}: no language has >= {min_pairs} pairs (per language: {dict(sorted(train_per_language.items()))})")
    train = [c for c in train if c.language in languages]
    pairs = build_pairs(train)
    capped = cap_per_language(pairs, spec.get("max_pairs_per_language"))
    drops["over_max_pairs_per_language"] += len(pairs) - len(capped)
    pairs = validate_pairs(capped, label)

    evaluation = None
    eval_queries_per_language: dict[str, int] = {}
    if with_evaluation:
        held_out = [c for c in held_out if c.language in languages]
        query_counts = {lang: len({normalize_text(c.query) for c in held_out if c.language == lang}) for lang in languages}
        eval_languages = [lang for lang in languages if query_counts[lang] >= min_eval_queries]
        stats["languages_without_evaluation"] = {lang: n for lang, n in query_counts.items() if n < min_eval_queries}
        if eval_languages:
            evaluation = validate_evaluation_set(build_evaluation_set(held_out, eval_languages), label)
            eval_queries_per_language = evaluation.queries.groupby("language").size().to_dict()
            stats["evaluation_corpus_per_language"] = int(len(evaluation.corpus) // len(eval_languages))

    stats.update({
        "languages": languages,
        "scripts": {lang: scripts[lang] for lang in languages},
        "pairs_per_language": pairs.groupby("language").size().to_dict(),
        "evaluation_queries_per_language": eval_queries_per_language,
        "drops": dict(sorted(drops.items())),
    })
    return pairs, evaluation, stats
