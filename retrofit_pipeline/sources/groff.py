"""Just enough of man(7)/groff to pull the NAME line and the DESCRIPTION prose out of a man page.

Not a renderer: tables, equations and macro definitions are dropped, font changes and the common
escapes are turned into plain text. What it keeps is the human-written prose, which is all the
pipeline needs."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

_ESCAPES = {
    r"\-": "-", r"\(aq": "'", r"\(dq": '"', r"\(lq": "\u201c", r"\(rq": "\u201d", r"\(oq": "\u2018",
    r"\(cq": "\u2019", r"\(em": "\u2014", r"\(en": "\u2013", r"\(bu": "\u2022", r"\(co": "\u00a9",
    r"\(rg": "\u00ae", r"\(mu": "\u00d7", r"\(>=": "\u2265", r"\(<=": "\u2264", r"\(ti": "~",
    r"\(ha": "^", r"\(ga": "`", r"\(Fo": "\u00ab", r"\(Fc": "\u00bb", r"\[Fo]": "\u00ab", r"\[Fc]": "\u00bb",
    r"\e": "\\", r"\ ": " ", r"\~": " ", r"\0": " ", r"\&": "", r"\,": "", r"\/": "", r"\:": "", r"\%": "",
    r"\|": "", r"\^": "", r"\c": "", r"\*(lq": "\u201c", r"\*(rq": "\u201d", r"\*R": "\u00ae", r"\*(Tm": "\u2122",
}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in sorted(_ESCAPES, key=len, reverse=True)))
_FONT_RE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SIZE_RE = re.compile(r"\\s[+-]?\d+")
_OTHER_ESCAPE_RE = re.compile(r"\\(\*\(..|\*\[[^\]]*\]|\*.|\(..|\[[^\]]*\]|[a-zA-Z]'[^']*'|.)")
# Macros whose arguments are running text (font alternations and the like).
_TEXT_MACROS = {"B", "I", "BR", "BI", "IB", "IR", "RB", "RI", "SM", "SB", "UR", "MT", "Nm", "Nd", "Ar", "Fl"}
# Macros that start a new paragraph.
_BREAK_MACROS = {"PP", "P", "LP", "TP", "IP", "HP", "TQ", "SS", "sp", "br", "RS", "RE", "Bl", "El", "It", "Pp"}
_DECLARED_CODING_RE = re.compile(rb"-\*-\s*coding:\s*([\w-]+)")


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class ParsedManPage:
    redirect: str | None  # target of a '.so' link page, which has no text of its own
    sections: list[Section]


def unescape(text: str) -> str:
    text = _FONT_RE.sub("", text)
    text = _SIZE_RE.sub("", text)
    text = _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)
    text = _OTHER_ESCAPE_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def _macro_arguments(rest: str) -> str:
    # Quoted arguments keep their spaces; font-alternation macros join their arguments without one.
    parts = re.findall(r'"([^"]*)"|(\S+)', rest)
    return " ".join(a or b for a, b in parts)


def decode_page(raw: bytes) -> str:
    """UTF-8, or the coding the page declares in its first line (older ja/zh pages do)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        declared = _DECLARED_CODING_RE.search(raw[:200])
        if declared:
            return raw.decode(declared.group(1).decode("ascii"))
        raise


def read_page(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return decode_page(raw)


def parse_man(source: str) -> ParsedManPage:
    sections: list[Section] = []
    current: list[str] = []
    in_no_fill_block = 0

    def flush() -> None:
        if sections and current:
            paragraph = unescape(" ".join(current))
            if paragraph:
                sections[-1].paragraphs.append(paragraph)
        current.clear()

    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", '\\"', ".\\#")):
            continue
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if name == "so" and not sections:
                return ParsedManPage(redirect=rest.strip(), sections=[])
            if name in ("SH", "Sh"):
                flush()
                sections.append(Section(heading=unescape(_macro_arguments(rest))))
            elif name in ("TS", "EQ", "de", "ig"):
                in_no_fill_block += 1
            elif name in ("TE", "EN", "..") and in_no_fill_block:
                in_no_fill_block -= 1
            elif in_no_fill_block:
                continue
            elif name in _BREAK_MACROS:
                flush()
            elif name in _TEXT_MACROS and rest.strip():
                current.append(_macro_arguments(rest))
            continue
        if in_no_fill_block:
            continue
        if not line.strip():
            flush()
            continue
        current.append(line)
    flush()
    return ParsedManPage(redirect=None, sections=sections)
