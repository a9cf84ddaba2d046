"""The Chinese edition is kept in step with the English one: the language switch, the message catalog (every
message translated, the compiled catalog up to date), and every notebook of notebooks/zh/ against its English
original (the same cells in the same order with the same tags, Chinese prose in every markdown cell, and code
cells that differ only in comments and in the text of string literals, which may be translated into Chinese)."""

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from moe_lab import i18n

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import i18n as catalog_tool  # noqa: E402  (tools/i18n.py)

EN = sorted((ROOT / "notebooks").glob("*.ipynb"))
ZH_DIR = ROOT / "notebooks" / "zh"
HAN = re.compile(r"[\u4e00-\u9fff]")


def code_shape(source: str) -> tuple[str, list[str]]:
    """A code cell's syntax tree with every string literal blanked, and the literals in order.

    Comments never reach the tree; an f-string keeps its interpolated expressions (sorted, since a translation may
    reorder them) and loses its text. IPython lines such as ``%matplotlib inline`` become plain calls first."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(source))
    texts = []

    class Blank(ast.NodeTransformer):
        def visit_JoinedStr(self, node):
            texts.append("".join(v.value for v in node.values if isinstance(v, ast.Constant)))
            parts = sorted(ast.dump(self.visit(v.value)) for v in node.values if isinstance(v, ast.FormattedValue))
            return ast.Constant(value="f-string: " + " | ".join(parts))

        def visit_Constant(self, node):
            if isinstance(node.value, str):
                texts.append(node.value)
                return ast.Constant(value="")
            return node

    return ast.dump(Blank().visit(tree)), texts


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_language_switch_and_its_errors():
    try:
        assert i18n.set_language("zh-CN") == "zh" and i18n.language() == "zh"
        assert i18n.set_language("EN") == "en"
        with pytest.raises(ValueError, match=r"lang must be one of 'en' \(English\), 'zh' \(中文 \(简体\)\); got 'fr'"):
            i18n.set_language("fr")
        with pytest.raises(TypeError, match="lang must be a string"):
            i18n.set_language(1)
    finally:
        i18n.set_language("en")


def test_unknown_messages_fall_back_to_english(zh):
    assert i18n._("a sentence nobody translated") == "a sentence nobody translated"
    assert i18n.N_("kept for later") == "kept for later"


def test_every_message_has_a_chinese_translation_and_the_catalog_is_compiled():
    problems = catalog_tool.problems("zh")
    assert not problems, "\n".join(problems[:20]) + (f"\n... {len(problems)} in all" if len(problems) > 20 else "")


def test_every_translation_keeps_its_placeholders():
    catalog = catalog_tool.read("zh")
    wrong = []
    for message in catalog:
        if message.id and message.string and isinstance(message.id, str):
            if sorted(re.findall(r"\{[^{}]*\}", message.id)) != sorted(re.findall(r"\{[^{}]*\}", message.string)):
                wrong.append(message.id)
    assert not wrong, f"translations that lose or add a {{placeholder}}: {wrong[:5]}"


def test_the_chinese_messages_are_used(zh):
    from moe_lab.exercises import unanswered

    assert HAN.search(str(unanswered("x", None)))


def test_every_english_notebook_has_its_chinese_edition():
    missing = [p.name for p in EN if not (ZH_DIR / p.name).exists()]
    assert not missing, f"notebooks without a Chinese edition in notebooks/zh/: {missing}"


@pytest.mark.parametrize("name", [p.name for p in EN])
def test_chinese_notebook_matches_the_english_one(name):
    zh_path = ZH_DIR / name
    if not zh_path.exists():
        pytest.skip(f"notebooks/zh/{name} does not exist yet (test_every_english_notebook_has_its_chinese_edition "
                    "fails for it)")
    en, zh = cells(ROOT / "notebooks" / name), cells(zh_path)
    assert [c["cell_type"] for c in zh] == [c["cell_type"] for c in en], "cell types or order differ"
    for i, (a, b) in enumerate(zip(en, zh, strict=True), 1):
        assert a.get("metadata", {}).get("tags", []) == b.get("metadata", {}).get("tags", []), f"cell {i}: tags"
        if a["cell_type"] == "code":
            en_tree, en_texts = code_shape("".join(a["source"]))
            zh_tree, zh_texts = code_shape("".join(b["source"]))
            assert en_tree == zh_tree, f"cell {i}: the code differs (beyond comments and the text of strings)"
            changed = [(e, z) for e, z in zip(en_texts, zh_texts, strict=True) if e != z and not HAN.search(z)]
            assert not changed, f"cell {i}: a string changed without being translated into Chinese: {changed[:3]}"
        elif "".join(a["source"]).strip():
            assert HAN.search("".join(b["source"])), f"cell {i}: no Chinese prose in this markdown cell"


def test_code_cells_may_translate_comments_and_strings_but_nothing_else():
    en = 'x = route(h, top_k=2)  # pick two\nprint(f"{n} tokens went to expert {e}", "done")\n'
    same, texts = code_shape(en)
    assert texts == [" tokens went to expert ", "done"]
    zh_tree, zh_texts = code_shape('x = route(h, top_k=2)  # 选两个\nprint(f"专家 {e} 收到 {n} 个 token", "完成")\n')
    assert zh_tree == same and all(HAN.search(t) for t in zh_texts)
    assert code_shape(en.replace("top_k=2", "top_k=3"))[0] != same
    assert code_shape(en.replace("{n}", "{n + 1}"))[0] != same
    assert code_shape("%matplotlib inline\n")[0] == code_shape("%matplotlib inline  # 内联\n")[0]
