"""The message catalogs of moe_lab (gettext, with Babel's extractor and compiler).

    python tools/i18n.py update     # extract every _()/N_()/ngettext() message of moe_lab into the zh .po
                                    # (new messages get an empty translation; vanished ones are dropped)
    python tools/i18n.py compile    # .po -> .mo (what moe_lab.i18n loads)
    python tools/i18n.py check      # exit 1 when a message lacks a translation or the .mo is stale
    python tools/i18n.py missing    # list the messages without a translation
    python tools/i18n.py merge F.json ...   # fill zh translations from {msgid: msgstr} files (then compile)

The .po is the source of truth and is edited by hand (translations); the .mo is committed next to it so that an
installed package needs no build step. ``tests/test_i18n.py`` runs the same checks.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "moe_lab"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
LANGS = ("zh",)


def po_path(lang: str) -> Path:
    return PACKAGE / "locale" / lang / "LC_MESSAGES" / "moe_lab.po"


def template() -> Catalog:
    """Every message the package marks for translation."""
    catalog = Catalog(project="moe_lab", charset="utf-8")
    for filename, lineno, message, comments, _context in extract_from_dir(
            str(PACKAGE), method_map=[("**.py", "python")], keywords=KEYWORDS, comment_tags=("i18n:",)):
        catalog.add(message, locations=[(f"moe_lab/{filename}", lineno)], auto_comments=comments)
    return catalog


def read(lang: str) -> Catalog:
    path = po_path(lang)
    if not path.exists():
        return Catalog(locale=lang, project="moe_lab", charset="utf-8")
    with path.open("rb") as fh:
        return read_po(fh, locale=lang)


def compiled(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def update(lang: str) -> Catalog:
    catalog = read(lang)
    catalog.update(template(), no_fuzzy_matching=True, update_header_comment=True)
    catalog.obsolete.clear()
    # a complete, non-fuzzy header: the compiled catalog then carries Chinese's plural rule (one form)
    catalog.fuzzy = False
    catalog.version, catalog.copyright_holder = "0.2.0", "the MoE Lab authors"
    catalog.last_translator = catalog.language_team = "MoE Lab"
    catalog.msgid_bugs_address = "the MoE Lab issue tracker"
    catalog.header_comment = ("# Chinese (simplified) messages of moe_lab: checker feedback, widget labels, plot "
                              "text.\n# Edit the msgstr lines; then python tools/i18n.py compile. Apache-2.0.")
    po_path(lang).parent.mkdir(parents=True, exist_ok=True)
    with po_path(lang).open("wb") as fh:
        write_po(fh, catalog, width=120, omit_header=False, sort_output=False, include_previous=False)
    return catalog


def untranslated(catalog: Catalog) -> list[str]:
    """Messages without a usable translation (empty, or only partly filled plural forms)."""
    missing = []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(strings):
            missing.append(message.id if isinstance(message.id, str) else message.id[0])
    return missing


def problems(lang: str) -> list[str]:
    catalog = read(lang)
    found = []
    wanted = {m.id for m in template() if m.id}
    have = {m.id for m in catalog if m.id}
    found += [f"not in the {lang} catalog (run tools/i18n.py update): {mid!r}"
              for mid in sorted(wanted - have, key=str)]
    found += [f"no {lang} translation: {mid!r}" for mid in untranslated(catalog)]
    mo = po_path(lang).with_suffix(".mo")
    if not mo.exists() or mo.read_bytes() != compiled(catalog):
        found.append(f"{mo.relative_to(ROOT)} is missing or older than its .po (run tools/i18n.py compile)")
    return found


def merge(lang: str, files: list[str]) -> int:
    """Write the translations of ``files`` (JSON objects msgid -> msgstr) into the catalog; returns how many."""
    catalog = update(lang)
    # a plural message (ngettext) is keyed by its singular; one string fills every form (Chinese has one)
    known = {(m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog if m.id}
    filled = 0
    for name in files:
        for msgid, msgstr in json.loads(Path(name).read_text(encoding="utf-8")).items():
            if msgid in known and msgstr:
                message = known[msgid]
                if isinstance(message.id, str):
                    message.string = msgstr
                else:
                    forms = [msgstr] if isinstance(msgstr, str) else list(msgstr)
                    message.string = tuple(forms + forms[-1:] * (catalog.num_plurals - len(forms)))
                message.flags.discard("fuzzy")
                filled += 1
    with po_path(lang).open("wb") as fh:
        write_po(fh, catalog, width=120, omit_header=False, sort_output=False, include_previous=False)
    return filled


def main(argv: list[str]) -> int:
    if argv and argv[0] == "merge":
        print(f"merged {merge('zh', argv[1:])} translations into {po_path('zh').relative_to(ROOT)}")
        return 0
    if not argv or argv[0] not in ("update", "compile", "check", "missing") or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    for lang in LANGS:
        if argv[0] == "update":
            catalog = update(lang)
            print(f"{po_path(lang).relative_to(ROOT)}: {len(catalog)} messages, "
                  f"{len(untranslated(catalog))} untranslated")
        elif argv[0] == "compile":
            po_path(lang).with_suffix(".mo").write_bytes(compiled(read(lang)))
            print(f"compiled {po_path(lang).with_suffix('.mo').relative_to(ROOT)}")
        elif argv[0] == "missing":
            for mid in untranslated(read(lang)):
                print(mid)
        else:
            issues = problems(lang)
            for issue in issues:
                print(issue)
            if issues:
                return 1
            print(f"{lang}: every message translated, .mo up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
