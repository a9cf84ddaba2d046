"""Notebook tooling for MoE Lab: build from percent-format source, execute, clean, check hygiene.

    python tools/nbtools.py build SRC.py OUT.ipynb   # percent format (# %%, # %% [markdown], tags=[...]);
                                                     # OUT in notebooks/zh/ gets the Chinese kernel
    python tools/nbtools.py export NB.ipynb          # print the notebook as percent-format source
    python tools/nbtools.py execute NB.ipynb ...     # fresh kernel, top to bottom, store outputs, clean
    python tools/nbtools.py check NB.ipynb ...       # hygiene check (run by `make test`)

The .ipynb files in notebooks/ are the source of truth; `build`/`export` are editing conveniences.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

KERNEL = {"name": "moe-lab", "display_name": "MoE Lab (MindSpore)", "language": "python"}
# The Chinese edition (notebooks/zh/): the same code cells, run by a kernel that sets MOE_LAB_LANG=zh
KERNEL_ZH = {"name": "moe-lab-zh", "display_name": "MoE Lab (MindSpore, 中文)", "language": "python"}
# What the first and the closing cells must say, per edition
OPENING = {"en": "you will be able to", "zh": "你将能够"}
EXERCISES = {"en": r"^#+ .*exercises", "zh": r"^#+ .*练习"}


def edition(path: Path) -> str:
    """``"zh"`` for a notebook of the Chinese edition (a ``zh`` folder), else ``"en"``."""
    return "zh" if path.parent.name == "zh" else "en"


def kernel_for(path: Path) -> dict:
    return KERNEL_ZH if edition(path) == "zh" else KERNEL
CHECK_TAG = "nbval-check-output"
# absolute local paths must not leak into stored outputs (they differ on every machine)
LOCAL_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Z]:\\\\Users)")
MAX_SECONDS = 90
# A learner reads about MoE, never about the team's process: words that belong in issues, not in a lesson.
PROCESS_WORDS = re.compile(r"(?i:research notes|speed targets?\b|\btarget (<=|>=)|targets of the course|"
                           r"the issue\b|not kept in the repository)|\bTODO\b|\bFIXME\b")


def build(src: Path, out: Path) -> None:
    import nbformat

    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in text.splitlines())
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

    for line in src.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^# %%(.*)$", line)
        if m:
            flush()
            header = m.group(1)
            kind = "markdown" if "[markdown]" in header else "code"
            t = re.search(r"tags=\[(.*?)\]", header)
            tags = [s.strip().strip("\"'") for s in t.group(1).split(",")] if t else []
            lines = []
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = kernel_for(out)
    nb.metadata["language_info"] = {"name": "python"}
    out.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def export(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        tag_text = f" tags=[{', '.join(json.dumps(t) for t in tags)}]" if tags else ""
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            body = "\n".join(("# " + ln) if ln else "#" for ln in src.splitlines())
            parts.append(f"# %% [markdown]{tag_text}\n{body}\n")
        else:
            parts.append(f"# %%{tag_text}\n{src}\n")
    return "\n".join(parts)


def clean(nb: dict, kernel: dict = KERNEL) -> dict:
    """Drop volatile metadata: widget state (breaks static renderers), execution timings."""
    nb["metadata"].pop("widgets", None)
    nb["metadata"]["kernelspec"] = kernel
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("collapsed", None)
        cell.get("metadata", {}).pop("scrolled", None)
    return nb


def execute(path: Path) -> float:
    """Run ``path`` top to bottom in a fresh kernel (cwd = its folder), store outputs, clean; seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(path.parent)}})
    # the kernel inherits this process's environment: the edition's language, as its kernelspec sets it
    saved = os.environ.get("MOE_LAB_LANG")
    os.environ["MOE_LAB_LANG"] = edition(path)
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        if saved is None:
            os.environ.pop("MOE_LAB_LANG", None)
        else:
            os.environ["MOE_LAB_LANG"] = saved
    seconds = time.perf_counter() - start
    data = clean(json.loads(nbformat.writes(nb)), kernel_for(path))
    tmp = path.with_suffix(".ipynb.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written notebook
    return seconds


def _text_of(output: dict) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    return "".join("".join(v) if isinstance(v, list) else str(v)
                   for k, v in data.items() if k.startswith("text/"))


def check(path: Path) -> list[str]:
    """Return the hygiene problems of one notebook (empty list = clean)."""
    problems = []
    nb = json.loads(path.read_text(encoding="utf-8"))
    if "widgets" in nb.get("metadata", {}):
        problems.append("metadata.widgets is stored (strip it: tools/nbtools.py execute does)")
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"code cells are not executed once, in order, from a fresh kernel: counts {counts}")
    for i, cell in enumerate(code, 1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"code cell {i} stores an error output ({out.get('ename')})")
            text = _text_of(out)
            if LOCAL_PATH.search(text):
                problems.append(f"code cell {i} output contains an absolute local path: "
                                f"{LOCAL_PATH.search(text).group(0)!r}")
    for i, cell in enumerate(nb["cells"], 1):
        texts = ["".join(cell["source"])] if cell["cell_type"] == "markdown" else [
            _text_of(out) for out in cell.get("outputs", [])]
        for text in texts:
            match = PROCESS_WORDS.search(text)
            if match:
                problems.append(f"cell {i} speaks about the project, not to a learner: {match.group(0)!r}")
    if not any(CHECK_TAG in c.get("metadata", {}).get("tags", []) for c in code):
        problems.append(f"no code cell is tagged {CHECK_TAG}: nbval would compare nothing")
    markdown = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown"]
    lang = edition(path)
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != kernel_for(path)["name"]:
        problems.append(f"the kernel must be {kernel_for(path)['name']!r} (the {lang} edition's)")
    if not markdown or OPENING[lang] not in markdown[0].lower():
        problems.append(f"the first cell must say what the learner will be able to do ({OPENING[lang]!r})")
    if not any(re.search(EXERCISES[lang], m, re.I | re.M) for m in markdown[-4:]):
        problems.append("the notebook must end with an 'Exercises' section")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in {"build", "export", "execute", "check"}:
        print(__doc__.strip().splitlines()[2:7] and __doc__)
        return 2
    cmd, args = argv[0], [Path(a) for a in argv[1:]]
    if cmd == "build":
        build(args[0], args[1])
        return 0
    if cmd == "export":
        sys.stdout.write(export(args[0]))
        return 0
    if cmd == "execute":
        slow = []
        for path in args:
            seconds = execute(path)
            print(f"{path}: executed in {seconds:.1f} s")
            if seconds > MAX_SECONDS:
                slow.append(path)
        if slow:
            print(f"too slow (> {MAX_SECONDS} s): {', '.join(map(str, slow))}")
        return 1 if slow else 0
    bad = 0
    for path in args:
        for problem in check(path):
            print(f"{path}: {problem}")
            bad += 1
    if not bad:
        print(f"notebook hygiene: {len(args)} notebooks clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
