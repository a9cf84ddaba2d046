"""The notebook hygiene check (run by `make test`) catches what it promises to catch."""

import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402


def _notebook(tmp_path, cells, folder="", **meta):
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = nbtools.KERNEL_ZH if folder == "zh" else nbtools.KERNEL
    nb.metadata.update(meta)
    (tmp_path / folder).mkdir(exist_ok=True)
    path = tmp_path / folder / "nb.ipynb"
    path.write_text(nbformat.writes(nb))
    return path


def _good_cells():
    code = nbformat.v4.new_code_cell("print(1)", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")])
    code.metadata["tags"] = ["nbval-check-output"]
    return [nbformat.v4.new_markdown_cell("# T\nAfter this notebook you will be able to: add."), code,
            nbformat.v4.new_markdown_cell("## Exercises\n1. ...")]


def test_clean_notebook_passes(tmp_path):
    assert nbtools.check(_notebook(tmp_path, _good_cells())) == []


def test_each_problem_is_reported(tmp_path):
    cells = _good_cells()
    cells[1].execution_count = 3
    cells[1].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    cells[1].outputs.append(nbformat.v4.new_output("stream", name="stdout", text="saved to /root/x.txt\n"))
    cells[1].metadata["tags"] = []
    cells[0].source = "# T"
    cells[2].source = "## Summary\nThe forward pass meets the speed target (see the research notes). TODO"
    problems = " | ".join(nbtools.check(_notebook(tmp_path, cells, widgets={"state": {}})))
    for needle in ("metadata.widgets", "counts [3]", "error output (ValueError)", "absolute local path",
                   "nbval-check-output", "you will be able to", "Exercises", "speaks about the project, not to a "
                   "learner: 'speed target'"):
        assert needle in problems


def test_build_export_round_trip(tmp_path):
    src = tmp_path / "s.py"
    src.write_text('# %% [markdown]\n# # Title\n# text\n\n# %% tags=["nbval-check-output"]\nprint(2)\n')
    out = tmp_path / "o.ipynb"
    nbtools.build(src, out)
    nb = json.loads(out.read_text())
    assert [c["cell_type"] for c in nb["cells"]] == ["markdown", "code"]
    assert nb["cells"][1]["metadata"]["tags"] == ["nbval-check-output"]
    assert nb["metadata"]["kernelspec"]["name"] == "moe-lab"
    assert "print(2)" in nbtools.export(out)



def test_the_chinese_edition_is_checked_in_chinese(tmp_path):
    code = _good_cells()[1]
    zh = [nbformat.v4.new_markdown_cell("# 标题\n学完本笔记本，你将能够：相加。"), code,
          nbformat.v4.new_markdown_cell("## 练习\n1. ...")]
    assert nbtools.check(_notebook(tmp_path, zh, folder="zh")) == []
    english_kernel = nbtools.check(_notebook(tmp_path, zh, folder="zh", kernelspec=nbtools.KERNEL))
    assert english_kernel == ["the kernel must be 'moe-lab-zh' (the zh edition's)"]
    problems = " | ".join(nbtools.check(_notebook(tmp_path, _good_cells(), folder="zh")))
    assert "'你将能够'" in problems and "Exercises" in problems
