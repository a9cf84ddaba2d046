"""Rebuild the four text files of the tiny MoE language model's corpus (notebook 03).

    python data/corpus/make_corpus.py --root /            # packages installed with apt-get
    python data/corpus/make_corpus.py --root /tmp/debs/x  # or unpacked with `dpkg-deb -x PKG.deb DIR`

Sources (licences in data/README.md):
  english.txt     King James Bible, Genesis and Matthew, via the `bible` program and data of the Debian
                  packages `bible-kjv` and `bible-kjv-text` (public-domain text)
  chinese.txt     300 Tang poems and 100 Song ci of Debian `fortunes-zh`, plus its entries from four
                  classical books (Analects, Dao De Jing, Caigentan, Zengguang Xianwen), all public domain by age
  python.txt      15 modules of the CPython 3.11 standard library of the running interpreter (PSF licence)
  arithmetic.txt  generated here (seeded): lines such as "12+7=19"

Licence texts go to licences/: the two Debian copyright files, the GPL-3 that fortunes-zh's refers to
(from base-files' /usr/share/common-licenses), and CPython's LICENSE.txt (the PSF licence asks that its
notice and agreement be kept with any copy).

Every file is written to a temporary file first and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
KJV_BOOKS = ("gen1:1-gen50:26", "mat1:1-mat28:20")  # Genesis and Matthew: narrative prose, ~330 KB
CLASSICS = ("论语", "道德经", "菜根谭", "增广贤文")  # attributions kept from the `chinese` fortune file
PY_MODULES = ("textwrap", "heapq", "bisect", "fractions", "statistics", "calendar", "shlex", "string",
              "glob", "fnmatch", "colorsys", "queue", "functools", "random", "dataclasses")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def english(root: Path) -> str:
    """Verses one per line (verse numbers dropped), a blank line between chapters."""
    program = root / "usr/bin/bible"
    if not program.exists():
        raise FileNotFoundError(f"{program} is missing: apt-get install bible-kjv bible-kjv-text "
                                "(or unpack both .deb files under --root)")
    out = subprocess.run([str(program), "-p", str(root / "usr/lib"), "-l1000", *KJV_BOOKS],
                         check=True, capture_output=True, text=True).stdout
    lines = []
    for line in out.splitlines():
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            lines.append(verse.group(1).strip())
        elif line.strip() and lines:  # a chapter heading such as "Genesis 2"
            lines.append("")
    return "\n".join(lines).strip() + "\n"


def _fortunes(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: apt-get install fortunes-zh (or unpack it under --root)")
    text = ANSI.sub("", path.read_text(encoding="utf-8"))
    return [entry.strip("\n") for entry in text.split("\n%\n") if entry.strip()]


def chinese(root: Path) -> str:
    """Poems as in the package (title, author, lines); classical sayings with their book; blank-line separated."""
    fortunes = root / "usr/share/games/fortunes"
    entries = _fortunes(fortunes / "tang300") + _fortunes(fortunes / "song100")
    for entry in _fortunes(fortunes / "chinese"):
        attribution = entry.strip().splitlines()[-1]
        # keep an entry only when its "-- source" line names one of the classical books
        if attribution.lstrip().startswith("--") and any(book in attribution for book in CLASSICS):
            entries.append(entry.strip())
    return "\n\n".join(entries) + "\n"


PSF_NOTICE = ("# Excerpts of the Python standard library. Copyright (c) 2001-2023 Python Software Foundation;\n"
              "# All Rights Reserved. Licensed under the PSF License Agreement: see licences/PYTHON-LICENSE.txt.\n")


def python_source() -> str:
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(f"the corpus uses the CPython 3.11 standard library; this is {sys.version.split()[0]}")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = [PSF_NOTICE] + [f"# ---- {name}.py (CPython {sys.version.split()[0]} standard library, PSF licence) ----\n"
             + (stdlib / f"{name}.py").read_text(encoding="utf-8") for name in PY_MODULES]
    return "\n".join(parts)


def arithmetic(num_lines: int = 24000, seed: int = 0) -> str:
    """Sums, differences and products of small numbers, one equation per line."""
    rng = random.Random(seed)
    lines = []
    for _ in range(num_lines):
        op = rng.choice("+-*")
        a = rng.randint(0, 999 if op != "*" else 99)
        b = rng.randint(0, 999 if op != "*" else 99)
        value = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"{a}{op}{b}={value}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/", help="prefix where the Debian packages are installed or unpacked")
    parser.add_argument("--out", default=str(HERE), help="output folder (default: this script's folder)")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = {"english": english(root), "chinese": chinese(root), "python": python_source(),
             "arithmetic": arithmetic()}
    licences = {"KJV-bible-kjv-text-copyright.txt": root / "usr/share/doc/bible-kjv-text/copyright",
                "fortunes-zh-copyright.txt": root / "usr/share/doc/fortunes-zh/copyright",
                "GPL-3.txt": Path("/usr/share/common-licenses/GPL-3"),
                "PYTHON-LICENSE.txt": Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"}
    for path in licences.values():
        if not path.exists():
            raise FileNotFoundError(f"licence file {path} is missing")
    for name, text in texts.items():
        write_atomic(out / f"{name}.txt", text)
        print(f"{name}.txt: {len(text.encode('utf-8')):,} bytes")
    (out / "licences").mkdir(exist_ok=True)
    for name, path in licences.items():
        write_atomic(out / "licences" / name, path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
