"""Printed text that lines up in every language: display width, padding by it, and counted nouns.

Introduced in notebook 06 (the expert-parallel run's table, ``moe_lab.parallel.cli.format_table``); notebook 08's
operator table (``moe_lab.ascend.backend.ops_table_text``) and notebook 03's benchmark lines use it too.

A Chinese character takes two columns of a monospace font, so ``str.ljust`` and ``f"{s:<8}"``, which count
characters, push every column after a translated header out of line. ``width``, ``ljust`` and ``rjust`` count
columns instead (East Asian wide and fullwidth characters 2, combining marks 0, everything else 1); on ASCII text
they give exactly what ``str.ljust`` / ``str.rjust`` give.
"""

from __future__ import annotations

import unicodedata

from moe_lab.i18n import _


def width(text: str) -> int:
    """Columns ``text`` takes in a monospace font: ``width("rank") == 4``, ``width("专家") == 4``."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in str(text))


def ljust(text: str, columns: int) -> str:
    """``text`` padded with spaces on the right to ``columns`` display columns (never cut)."""
    text = str(text)
    return text + " " * max(columns - width(text), 0)


def rjust(text: str, columns: int) -> str:
    """``text`` padded with spaces on the left to ``columns`` display columns (never cut)."""
    text = str(text)
    return " " * max(columns - width(text), 0) + text


def counted(n: int, one: str, many: str, **fields) -> str:
    """The singular or plural message for ``n``, translated, with ``{n}`` and ``fields`` filled in.

    ``counted(2, N_("{n} rank"), N_("{n} ranks"))`` -> ``"2 ranks"`` (in Chinese both forms read ``"{n} 个 rank"``).
    Two plain messages rather than one ``ngettext`` entry: ``tools/i18n.py merge`` fills plain messages only.
    """
    return _(one if n == 1 else many).format(n=n, **fields)


def plural(n: int, noun: str) -> str:
    """``1 node``, ``4 nodes``, ``1,000 devices``: an English noun gets its ``s``.

    A noun written in another language is used as it is, so a translated notebook can write
    ``plural(4, "个节点")`` -> ``"4 个节点"``. Notebooks 06 and 07 write their own sentences around it."""
    if not noun.isascii():
        return f"{n:,} {noun}"
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
