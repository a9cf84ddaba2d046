"""Shared test set-up: the detected (or emulated) board once, quiet MindSpore logs, a seeded input factory.

``make test`` runs the suite on the CPU, then again under emulated Atlas boards (``MOE_LAB_BACKEND=emulate-910b``,
``emulate-310p``, ``emulate-310b``: ``moe_lab.ascend.backend``). Under an emulated board the test files that
never touch the backend (their code has no board-dependent path) are deselected: they already ran in the CPU
pass, and running them again would prove nothing new. The list is ``BACKEND_INDEPENDENT``; the report header
names the board and the deselected files.
"""

import os

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import moe_lab  # noqa: E402
from moe_lab.ascend.backend import current_backend  # noqa: E402
from moe_lab.env import cjk_font  # noqa: E402
from moe_lab.i18n import set_language  # noqa: E402

moe_lab.setup(seed=0, lang="en")  # the tests read English messages, whatever MOE_LAB_LANG says
BACKEND = current_backend()

# Files whose code never reads the backend: budgets, corpus, the LM (its blocks use the "dense" path), msrun
# jobs (their check pins dispatch="sorted"), the compiled and capacity-sweep paths, plots and widgets (NumPy
# simulation), the browser, benchmarks and notebook tooling.
BACKEND_INDEPENDENT = frozenset({
    "test_balance.py", "test_bench_quick.py", "test_browser.py", "test_budget.py", "test_budget_cli.py",
    "test_budget_memory.py", "test_budget_model.py", "test_budget_plots.py", "test_capacity_sweep.py",
    "test_corpus.py", "test_environment.py", "test_ep_cli.py", "test_ep_sim.py", "test_expert_parallel.py",
    "test_exercises_nb04.py", "test_exercises_nb05.py", "test_exercises_nb06.py", "test_exercises_nb07.py",
    "test_lm.py", "test_nbtools.py", "test_static_dispatch.py", "test_textfmt.py", "test_viz.py", "test_widgets.py",
})


def pytest_report_header(config):
    if BACKEND.emulated:
        return [f"emulated board {BACKEND.name} (default dispatch {BACKEND.default_dispatch!r}); backend-independent "
                f"files deselected: {', '.join(sorted(BACKEND_INDEPENDENT))}"]
    return [f"backend: {BACKEND.describe()}"]


def pytest_collection_modifyitems(config, items):
    if not BACKEND.emulated:
        return
    keep = [item for item in items if item.path.name not in BACKEND_INDEPENDENT]
    dropped = [item for item in items if item.path.name in BACKEND_INDEPENDENT]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def path_tolerance(dispatch: str | None = None) -> float:
    """Absolute tolerance for comparing a dispatch path with the float64 reference: 1e-5 in float32; the fused
    path on a board computes in the board's dtype (bf16 ~8e-3 relative per rounding, fp16 ~1e-3)."""
    dispatch = BACKEND.default_dispatch if dispatch is None else dispatch
    if dispatch != "fused":
        return 1e-5
    return {"float32": 1e-5, "float16": 5e-3, "bfloat16": 5e-2}[BACKEND.compute_dtype]


@pytest.fixture
def zh():
    """Run a test with the package's messages in Chinese, then back to English."""
    set_language("zh")
    yield
    set_language("en")


def chinese_font():
    """The rcParams ``moe_lab.setup(lang="zh")`` sets: a CJK font first (skips the test if none is installed)."""
    import matplotlib

    font = cjk_font()
    if font is None:
        pytest.skip("no font with Chinese glyphs is installed (Debian: apt-get install fonts-wqy-microhei)")
    return matplotlib.rc_context({"font.sans-serif": [font, "DejaVu Sans"], "axes.unicode_minus": False})


@pytest.fixture
def zh_plots(zh):
    """Chinese messages (the ``zh`` fixture) and the CJK font ``moe_lab.setup(lang="zh")`` gives matplotlib."""
    with chinese_font():
        yield


@pytest.fixture
def make_x():
    """``make_x(*shape, seed=0)``: a float32 MindSpore tensor of standard normal values."""

    def make(*shape, seed=0):
        return ms.Tensor(np.random.default_rng(seed).normal(size=shape).astype(np.float32))

    return make
