"""Notebook-07 figures are pure functions, and its dashboard steps through every setting: checked without a
browser (the notebook shows the dashboard; its self-test lives here), in English and in Chinese."""

import re

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from moe_lab.budget.count import count_parameters  # noqa: E402
from moe_lab.budget.hardware import load_device  # noqa: E402
from moe_lab.budget.memory import devices_needed, serving_memory  # noqa: E402
from moe_lab.budget.spec import load_model  # noqa: E402
from moe_lab.textfmt import plural  # noqa: E402
from moe_lab.viz.budget import BudgetDashboard, memory_bar_figure, params_figure  # noqa: E402
from moe_lab.viz.widgets import WithPngFallback, figure_png  # noqa: E402


def test_memory_bar_figure_stacks_three_parts_and_names_the_device_count():
    spec = load_model("openpangu-ultra-moe-718b")
    budget = serving_memory(spec, "bf16", 32768, 8)
    dev = load_device("atlas-800i-a2")
    n = devices_needed(budget.total, dev)
    fig = memory_bar_figure(budget, dev, n)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert len(widths) == 3 and widths == pytest.approx(list(budget.parts_gb().values()))
    assert f"{n} x atlas-800i-a2 = 4 nodes" in ax.get_title()
    assert len(ax.lines) == 1 + 4  # capacity line + one dashed line per server
    plt.close(fig)
    with pytest.raises(TypeError, match="ServingBudget"):
        memory_bar_figure({"weights": 1}, dev, 1)


def test_one_node_is_singular():
    budget = serving_memory(load_model("mixtral-8x7b"), "bf16", 4096, 1)
    dev = load_device("h100-sxm")
    fig = memory_bar_figure(budget, dev, devices_needed(budget.total, dev))
    assert fig.axes[0].get_title().endswith("= 1 node")
    plt.close(fig)
    assert plural(2, "node") == "2 nodes"


def test_dashboard_steps_through_every_value_of_every_control():
    dash = BudgetDashboard(quiet=True)
    sizes = {name: len(dash.control_values(name)) for name in dash.controls}
    assert sizes["context"] == 8 and sizes["batch"] == 7 and sizes["model"] == 16
    redraws = dash.step_through()
    assert redraws >= sum(sizes.values())  # every value drawn at least once, none raised
    assert dash.values() == {"model": "openpangu-ultra-moe-718b", "dtype": "bf16", "context": 32768, "batch": 8,
                             "device": "atlas-800i-a2"}
    plt.close("all")


def test_dashboard_explains_a_context_the_model_cannot_read():
    dash = BudgetDashboard(quiet=True)
    fig = dash.figure(model="deepseek-moe-16b", dtype="bf16", context=32768, batch=1, device="atlas-800i-a2")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("at most 4,096 tokens" in t for t in texts) and not fig.axes[0].patches
    plt.close(fig)
    bundle = dash._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle


def test_memory_bar_without_node_size():
    budget = serving_memory(load_model("qwen1.5-moe-a2.7b"), "int4", 4096, 1)
    fig = memory_bar_figure(budget, load_device("atlas-300i-duo"), 1)
    assert "nodes" not in fig.axes[0].get_title()
    plt.close(fig)


def test_params_figure_and_png():
    rows = []
    for mid in ("mixtral-8x7b", "kimi-k2"):
        c = count_parameters(load_model(mid))
        rows.append({"name": mid, "total": c.total, "active": c.active, "published_total": 1e9,
                     "published_active": 1e9})
    fig = params_figure(rows)
    assert len(fig.axes[0].patches) == 4 and fig.axes[0].get_xscale() == "log"
    png = figure_png(fig)
    assert png.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="at least one"):
        params_figure([])


def test_png_fallback_bundle_has_widget_and_png():
    fig = params_figure([{"name": "m", "total": 2e9, "active": 1e9}])
    shown = WithPngFallback(widgets.VBox([widgets.IntSlider()]), fig)
    bundle = shown._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle


def legend_covers_a_bar(fig) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent(renderer)
    return any(box.overlaps(p.get_window_extent(renderer)) for p in ax.patches)


def params_rows(ids=("mixtral-8x7b", "kimi-k2", "openpangu-ultra-moe-718b")):
    rows = []
    for mid in ids:
        c = count_parameters(load_model(mid))
        rows.append({"name": mid, "total": c.total, "active": c.active, "published_total": c.total,
                     "published_active": c.active})
    return rows


def test_params_legend_covers_no_bar():
    """Inside the axes ("lower right") the legend covered kimi-k2's 1,000B bar."""
    fig = params_figure(params_rows())
    assert not legend_covers_a_bar(fig)
    plt.close(fig)


HAN = re.compile(r"[\u4e00-\u9fff]")


def test_figures_and_dashboard_speak_chinese(zh_plots):
    dash = BudgetDashboard(quiet=True)
    for name, control in dash.controls.items():
        if name != "dtype":  # a config word, the same in Chinese
            assert HAN.search(control.description), name
    fig = dash.figure(**dash.values())
    ax = fig.axes[0]
    title = ax.get_title()
    budget = serving_memory(load_model("openpangu-ultra-moe-718b"), "bf16", 32768, 8)
    n = devices_needed(budget.total, load_device("atlas-800i-a2"))
    assert HAN.search(title) and f"{n} x atlas-800i-a2 = 4" in title and HAN.search(ax.get_xlabel())
    assert all(HAN.search(t.get_text()) for t in ax.get_legend().get_texts())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for text in (ax.title, ax.xaxis.label, ax.get_legend()):
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y0 >= 0 and box.y1 <= fig.bbox.y1, text
    plt.close(fig)
    fig = dash.figure(model="deepseek-moe-16b", dtype="bf16", context=32768, batch=1, device="atlas-800i-a2")
    message = fig.axes[0].texts[0].get_text()
    assert HAN.search(message) and "4,096" in message and "max_position_embeddings" in message
    plt.close(fig)
    fig = params_figure(params_rows())
    assert all(HAN.search(t.get_text()) for t in fig.axes[0].get_legend().get_texts())
    assert HAN.search(fig.axes[0].get_xlabel()) and not legend_covers_a_bar(fig)
    plt.close(fig)
