"""The package's shape: imports point one way (later chapters import earlier ones, figures and widgets import
the rest, never the reverse), no import cycles, no function-local imports of the package's own modules, every
module says which notebook introduces it, and each concept is defined once."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "moe_lab"
NOTEBOOKS = {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}

# Layers, lowest first: a module may import modules of its own layer or lower ones, never higher ones.
LAYERS = [
    ("moe_lab.checks", "moe_lab.i18n", "moe_lab.textfmt", "moe_lab.ascend.host"),
    ("moe_lab.ascend",),
    ("moe_lab.env", "moe_lab.core"),
    ("moe_lab.balance",),
    ("moe_lab.lm",),
    ("moe_lab.parallel", "moe_lab.budget", "moe_lab.bench_report"),
    ("moe_lab.viz",),
    ("moe_lab.exercises",),
    ("moe_lab.__main__", "moe_lab"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{name} belongs to no layer of tests/test_package.py"
    return best[0]


def own_imports(tree: ast.AST, top_level_only: bool) -> list[tuple[str, int]]:
    """``(module, line)`` of every import of a moe_lab module (``from moe_lab import x`` counts as moe_lab.x when
    x is a module)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "moe_lab":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in MODULES else node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "moe_lab"]
    return found


def test_imports_point_one_way():
    wrong = []
    for name, path in MODULES.items():
        for imported, line in own_imports(ast.parse(path.read_text()), top_level_only=False):
            if layer_of(imported) > layer_of(name):
                wrong.append(f"{name}:{line} imports {imported}")
    assert not wrong, "later chapters may import earlier ones, never the reverse:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: {m for m, _ in own_imports(ast.parse(path.read_text()), top_level_only=True)
                    if m in MODULES and m != name and not name.startswith(m + ".") and m != "moe_lab"}
             for name, path in MODULES.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_function_local_imports_of_the_package():
    local = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                if any(m for m, _ in own_imports(ast.Module(body=[node], type_ignores=[]), True)):
                    local.append(f"{name}:{node.lineno}")
    assert not local, "imports of moe_lab modules belong at the top of the module: " + ", ".join(local)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_where_the_course_introduces_it(name):
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text())) or ""
    numbers = set(re.findall(r"[Nn]otebooks? (\d\d)", doc)) | set(re.findall(r"notebooks (\d\d)-\d\d", doc))
    assert numbers, f"{name}'s docstring names no notebook ('notebook NN')"
    assert numbers <= NOTEBOOKS, f"{name}'s docstring names notebooks {sorted(numbers - NOTEBOOKS)} that do not exist"


@pytest.mark.parametrize("definition", ["class WithPngFallback", "def figure_png", "def expert_params(",
                                        "def softmax(", "class Routing", "FAMILIES = "])
def test_each_concept_is_defined_once(definition):
    pattern = "^" + re.escape(definition) + (r"\b" if definition[-1].isalnum() else "")
    where = [name for name, path in MODULES.items() if re.search(pattern, path.read_text(), re.M)]
    allowed = 2 if definition == "def expert_params(" else 1  # one expert of a layer (core), one of a spec (budget)
    assert 1 <= len(where) <= allowed, f"{definition!r} is defined in {where}"


def test_the_names_the_notebooks_use_are_importable_from_moe_lab():
    import moe_lab

    for name in ("setup", "MoELayer", "Expert", "Experts", "SharedExperts", "SoftmaxRouter", "SigmoidRouter",
                 "Routing", "count_params", "moe_layer_params"):
        assert hasattr(moe_lab, name), name


def test_repo_path_finds_the_data_from_any_folder(tmp_path, monkeypatch):
    import moe_lab

    monkeypatch.chdir(tmp_path)  # a notebook in notebooks/zh, or any other working directory
    assert moe_lab.repo_path("data", "models", "mixtral-8x7b", "config.json").is_file()
    with pytest.raises(FileNotFoundError, match="data/nowhere is not in the repository"):
        moe_lab.repo_path("data", "nowhere")
