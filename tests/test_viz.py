"""moe_lab.viz.figures: each plot draws the data it is given (checked on the artists), rejects bad shapes,
keeps its legend off the data and its characters legible, in English and in Chinese (the ``zh`` tests pass
once the Chinese catalog has the figures' messages)."""

import io
import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import chinese_font
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from moe_lab.core.capacity_sweep import capacity_sweep  # noqa: E402
from moe_lab.core.layer import MoELayer  # noqa: E402
from moe_lab.i18n import set_language  # noqa: E402
from moe_lab.viz import figures as viz  # noqa: E402
from moe_lab.viz import lm_routes  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bar_heights(ax, label):
    container = next(c for c in ax.containers if c.get_label() == label)
    return np.array([p.get_height() for p in container.patches])


def hlines(ax):
    """{label: y} of the horizontal lines drawn with axhline."""
    return {ln.get_label(): ln.get_ydata()[0] for ln in ax.get_lines()}


# ----------------------------------------------------------------------------- tokens per expert

def test_expert_load_bars_capacity_and_drops():
    load = np.array([50, 10, 80, 20])
    fig = viz.plot_expert_load(load, capacity=40)
    ax = fig.axes[0]
    np.testing.assert_array_equal(bar_heights(ax, "processed"), [40, 10, 40, 20])
    np.testing.assert_array_equal(bar_heights(ax, "dropped"), [10, 0, 40, 0])
    lines = hlines(ax)
    assert lines["capacity"] == 40
    assert lines["perfect balance"] == pytest.approx(40.0)
    assert ax.get_title() == "capacity 40: dropped 50 of 160 slots (31.2%), max/mean load 2.00"
    assert ax.get_xlabel() == "expert" and ax.get_ylabel() == "token slots"


def test_expert_load_dropless_and_explicit_kept():
    ax = viz.plot_expert_load([3, 5, 0]).axes[0]
    np.testing.assert_array_equal(bar_heights(ax, "dropped"), [0, 0, 0])
    assert not any(label.startswith("capacity") for label in hlines(ax))
    # "priority" policy: kept comes from the routing, not from min(load, capacity)
    ax = viz.plot_expert_load([6, 2], capacity=4, kept=[4, 2]).axes[0]
    np.testing.assert_array_equal(bar_heights(ax, "processed"), [4, 2])


def test_expert_load_fixed_frame_labels_cut_bars():
    ax = viz.plot_expert_load([100, 5, 5], ylim=50).axes[0]
    assert ax.get_ylim() == (0, 50)
    assert [t.get_text() for t in ax.texts] == ["100"]


def test_expert_load_accepts_a_mindspore_routing(make_x):
    layer = MoELayer(8, 16, 4, 2, capacity_factor=1.0)
    routing = layer.route(make_x(32, 8))
    ax = viz.plot_expert_load(routing.load(), routing.capacity, routing.kept()).axes[0]
    np.testing.assert_array_equal(bar_heights(ax, "processed"), routing.kept())
    assert bar_heights(ax, "dropped").sum() == routing.dropped()


@pytest.mark.parametrize("kwargs, error, words", [
    ({"load": [[1, 2]]}, ValueError, "load must have 1 dimension"),
    ({"load": []}, ValueError, "at least one expert"),
    ({"load": [1, -2]}, ValueError, "load must not be negative"),
    ({"load": [1.5, 2]}, TypeError, "load must contain integers"),
    ({"load": ["a", "b"]}, TypeError, "load must be an array of numbers"),
    ({"load": [1, 2], "kept": [1, 2, 3]}, ValueError, "kept must have the shape of load (2,), got (3,)"),
    ({"load": [1, 2], "kept": [2, 2]}, ValueError, "kept must not exceed load"),
    ({"load": [1, 2], "capacity": -1}, ValueError, "capacity must be >= 0"),
])
def test_expert_load_bad_input(kwargs, error, words):
    with pytest.raises(error, match=None) as info:
        viz.plot_expert_load(**kwargs)
    assert words in str(info.value)


# ----------------------------------------------------------------------------- routing heatmap

def test_routing_heatmap_image_and_markers():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=6)
    indices = np.argsort(-probs, 1)[:, :2]
    keep = np.ones((6, 2), bool)
    keep[3, 1] = keep[5, 0] = False
    fig = viz.plot_routing_heatmap(probs, indices, keep, token_labels=list("abc de"))
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), probs.T)
    scatters = {c.get_label(): c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)}
    assert len(scatters["chosen"]) == 10 and len(scatters["dropped"]) == 2
    np.testing.assert_array_equal(scatters["dropped"], [[3, indices[3, 1]], [5, indices[5, 0]]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", " ", "d", "e"]
    assert len(fig.axes) == 2  # the colour bar
    assert ax.get_xlabel() == "token" and ax.get_ylabel() == "expert"


def test_routing_heatmap_without_choices_or_colorbar():
    fig = viz.plot_routing_heatmap(np.full((3, 2), 0.5), colorbar=False)
    assert len(fig.axes) == 1 and not fig.axes[0].collections


@pytest.mark.parametrize("args, kwargs, words", [
    (([0.5, 0.5],), {}, "probs must have 2 dimension(s), got shape (2,)"),
    ((np.full((3, 2), 0.5), np.zeros((4, 1), int)), {}, "indices must have one row per token of probs (3)"),
    ((np.full((3, 2), 0.5), np.full((3, 1), 2)), {}, "indices must hold expert indices 0..1"),
    ((np.full((3, 2), 0.5), np.zeros((3, 1), int), np.ones((3, 2), bool)), {}, "keep must have the shape of"),
    ((np.full((3, 2), 0.5), None, np.ones((3, 1), bool)), {}, "keep needs indices"),
    ((np.full((3, 2), 2.0),), {}, "probs must be probabilities in [0, 1]"),
    ((np.full((3, 2), 0.5),), {"token_labels": ["a"]}, "token_labels must have one label per token (3)"),
])
def test_routing_heatmap_bad_input(args, kwargs, words):
    with pytest.raises(ValueError) as info:
        viz.plot_routing_heatmap(*args, **kwargs)
    assert words in str(info.value)


def test_routing_heatmap_keep_must_be_boolean():
    with pytest.raises(TypeError, match="keep must be a boolean array"):
        viz.plot_routing_heatmap(np.full((3, 2), 0.5), np.zeros((3, 1), int), np.ones((3, 1)))


# ----------------------------------------------------------------------------- confidence

def test_confidence_histogram_counts_top1_and_topk_mass():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=200)
    ax = viz.plot_confidence_histogram(probs, top_k=2, bins=10).axes[0]
    steps = {p.get_label(): p.get_data() for p in ax.patches}
    edges = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(steps["top-1 probability"].values, np.histogram(probs.max(1), bins=edges)[0])
    np.testing.assert_allclose(steps["top-1 probability"].edges, edges)
    top2 = np.sort(probs, 1)[:, -2:].sum(1)
    np.testing.assert_array_equal(steps["top-2 mass"].values, np.histogram(top2, bins=edges)[0])
    uniform = [ln for ln in ax.get_lines() if ln.get_label() == "uniform = 1/4"]
    assert uniform and uniform[0].get_xdata()[0] == 0.25
    assert ax.get_title() == f"router confidence: mean top-1 = {probs.max(1).mean():.2f}"


def test_confidence_histogram_fixed_top():
    ax = viz.plot_confidence_histogram(np.full((4, 2), 0.5), ylim=10).axes[0]
    assert ax.get_ylim() == (0, 10)


def test_confidence_histogram_bad_top_k():
    with pytest.raises(ValueError, match="top_k must be <= 3, got 4"):
        viz.plot_confidence_histogram(np.full((2, 3), 1 / 3), top_k=4)


# ----------------------------------------------------------------------------- per-layer load

def test_layer_load_shares_and_highlight():
    loads = np.array([[10, 30], [20, 20], [0, 0]])
    fig = lm_routes.plot_layer_load(loads, layer_names=["a", "b", "c"], highlight=1)
    ax = fig.axes[0]
    np.testing.assert_allclose(bar_heights(ax, "expert 0"), [0.25, 0.5, 0.0])
    np.testing.assert_allclose(bar_heights(ax, "expert 1"), [0.75, 0.5, 0.0])
    assert ax.containers[0].patches[0].get_alpha() == 0.25 and ax.containers[1].patches[0].get_alpha() == 1.0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert hlines(ax)["perfect balance"] == 0.5


@pytest.mark.parametrize("kwargs, error, words", [
    ({"loads": [1, 2]}, ValueError, "loads must have 2 dimension(s)"),
    ({"loads": [[1, 2]], "layer_names": ["a", "b"]}, ValueError, "layer_names must have one name per layer (1)"),
    ({"loads": [[1, 2]], "highlight": 2}, ValueError, "highlight must be <= 1"),
    ({"loads": [[1, -2]]}, ValueError, "loads must not be negative"),
])
def test_layer_load_bad_input(kwargs, error, words):
    with pytest.raises(error) as info:
        lm_routes.plot_layer_load(**kwargs)
    assert words in str(info.value)


# ----------------------------------------------------------------------------- text coloured by expert

def test_char_experts_majority_of_the_bytes():
    text = "a天b地"  # 天 and 地 are 3 UTF-8 bytes each
    np.testing.assert_array_equal(lm_routes.char_experts(text, [0, 1, 2, 2, 3, 1, 0, 3]), [0, 2, 3, 1])
    # no majority: the earliest byte decides
    np.testing.assert_array_equal(lm_routes.char_experts("天", [2, 0, 1]), [2])


def test_char_experts_bad_input():
    with pytest.raises(ValueError, match=r"one entry per UTF-8 byte of text \(4\), got shape \(2,\)"):
        lm_routes.char_experts("a天", [0, 1])
    with pytest.raises(TypeError, match="text must be a str"):
        lm_routes.char_experts(b"ab", [0, 1])


def tiles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_text_experts_tiles_colours_and_layout():
    text = "ab\ncd e"
    experts = np.array([0, 1, 2, 3, -1, 1, 0])
    fig = lm_routes.plot_text_experts(text, experts, 4, width=10)
    ax = fig.axes[0]
    patches = tiles(ax)
    assert len(patches) == len(text)
    colors = viz.expert_colors(4)
    for patch, e in zip(patches, experts, strict=True):
        want = matplotlib.colors.to_rgb(viz.NO_EXPERT_COLOR) if e < 0 else colors[e][:3]
        np.testing.assert_allclose(patch.get_facecolor()[:3], want)
    # the newline ends the first line: "c" starts line 2 at column 0
    assert patches[3].get_xy() == (0, -2)
    assert [t.get_text() for t in ax.texts] == ["a", "b", "⏎", "c", "d", "·", "e"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["none", "expert 0", "expert 1", "expert 2",
                                                                     "expert 3"]


def test_text_experts_highlight_and_truncation():
    ax = lm_routes.plot_text_experts("abcdefgh", [0, 1] * 4, 2, highlight=1, width=3, max_lines=2).axes[0]
    patches = tiles(ax)
    assert len(patches) == 6  # 2 lines of 3
    assert [p.get_alpha() for p in patches[:2]] == [0.12, 0.85]
    assert ax.texts[-1].get_text() == "…"


def test_text_experts_undrawable_characters_get_a_placeholder():
    ax = lm_routes.plot_text_experts("x天", [0, 1], 2).axes[0]
    drawn = ax.texts[1].get_text()
    # with a CJK font the character itself is drawn; without one, a placeholder (never an empty box)
    assert drawn == ("天" if "天" in lm_routes._drawable({"天"}, lm_routes.text_families()) else "□")


@pytest.mark.parametrize("args, kwargs, error, words", [
    (("abc", [0, 1], 2), {}, ValueError, "experts must have one entry per character of text (3), got shape (2,)"),
    (("ab", [0, 2], 2), {}, ValueError, "experts must hold expert indices -1 (no expert) or 0..1"),
    (("ab", [0, 1], 2), {"highlight": 5}, ValueError, "highlight must be <= 1"),
    (("ab", [0, 1], 0), {}, ValueError, "num_experts must be >= 1"),
    ((3, [0], 2), {}, TypeError, "text must be a str"),
])
def test_text_experts_bad_input(args, kwargs, error, words):
    with pytest.raises(error) as info:
        lm_routes.plot_text_experts(*args, **kwargs)
    assert words in str(info.value)


# ----------------------------------------------------------------------------- domain x expert

def test_domain_expert_heatmap_row_shares_and_labels():
    counts = np.array([[30, 10], [0, 40], [0, 0]])
    fig = lm_routes.plot_domain_expert_heatmap(counts, ["english", "chinese", "empty"], highlight=1)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.75, 0.25], [0.0, 1.0], [0.0, 0.0]])
    assert [t.get_text() for t in ax.texts] == ["75%", "25%", "0%", "100%", "0%", "0%"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["english", "chinese", "empty"]
    frame = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(frame) == 1 and frame[0].get_x() == 0.5


@pytest.mark.parametrize("args, words", [
    (([[1, 2]], ["a", "b"]), "domains must have one name per row of counts (1), got 2"),
    (([1, 2], ["a"]), "counts must have 2 dimension(s)"),
    ((np.zeros((0, 2)), []), "at least one domain"),
])
def test_domain_expert_heatmap_bad_input(args, words):
    with pytest.raises(ValueError) as info:
        lm_routes.plot_domain_expert_heatmap(*args)
    assert words in str(info.value)


# ----------------------------------------------------------------------------- balancing history

def test_load_history_plots_max_over_mean():
    history = np.array([[30, 10], [25, 15], [20, 20]])
    ax = viz.plot_load_history(history).axes[0]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "max/mean load")
    np.testing.assert_allclose(line.get_ydata(), [1.5, 1.25, 1.0])
    assert ax.get_title() == "balancing: max/mean 1.50 -> 1.00"
    assert ax.get_xlim() == (0, 2) and ax.get_ylim() == (0.9, 4.0)
    # a fixed frame (the dashboard's): the steps slider's maximum and a chosen top
    ax = viz.plot_load_history(history, max_steps=20, ylim=8.0).axes[0]
    assert ax.get_xlim() == (0, 20) and ax.get_ylim() == (0.9, 8.0)
    assert all(float(t).is_integer() for t in ax.get_xticks())  # steps are whole numbers
    with pytest.raises(ValueError, match="history must have 2 dimension"):
        viz.plot_load_history([1, 2])


def test_draws_on_a_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert viz.plot_expert_load([1, 2], ax=axes[1]) is fig
    assert axes[1].containers and not axes[0].containers


def test_expert_colors_are_distinct():
    for e in (2, 10, 16, 40):
        colors = viz.expert_colors(e)
        assert colors.shape == (e, 4) and len({tuple(c) for c in colors}) == e


def test_text_experts_fixed_frame_keeps_the_tile_size():
    ax = lm_routes.plot_text_experts("ab", [0, 1], 2, width=20, max_lines=5, fixed_frame=True).axes[0]
    assert ax.get_ylim() == (-5, 0) and ax.get_xlim()[1] == pytest.approx(20.8)


def test_text_grid_lines():
    cells, lines, cut = lm_routes.text_grid("ab\ncd", width=10, max_lines=4)
    assert [c[:2] for c in cells] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)] and lines == 2 and not cut
    assert lm_routes.text_grid("", 5, 3) == ([], 1, False)
    cells, lines, cut = lm_routes.text_grid("x" * 12, width=5, max_lines=2)
    assert len(cells) == 10 and lines == 2 and cut
    with pytest.raises(ValueError, match="width must be >= 1"):
        lm_routes.text_grid("a", 0, 1)


def glyph_heights(fig, ax):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer).height for t in ax.texts]


def test_text_experts_fill_their_tiles_and_have_no_empty_band():
    """The characters were ~7 px over a band of empty lines: now the font follows the tile and a
    figure made here has the text's lines only."""
    text = "one line\nand a second"
    fig = lm_routes.plot_text_experts(text, np.zeros(len(text), int), 2, width=20, max_lines=8)
    ax = fig.axes[0]
    assert ax.get_ylim() == (-2, 0)  # 2 lines of text, 2 lines of grid
    tile_px = ax.get_window_extent().height / 2
    assert min(glyph_heights(fig, ax)) >= 0.5 * tile_px
    assert fig.dpi * lm_routes.TILE_INCHES[1] == pytest.approx(tile_px, rel=0.02)
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    tiles = [p.get_window_extent() for p in ax.patches]
    assert legend.x0 >= max(t.x1 for t in tiles)  # right of the grid, over no tile


def test_text_samples_stack_grids_of_equal_tiles():
    samples = {"short": ("ab", [0, 1]), "three lines": ("a\nb\nc", [0, 1, 1, 0, 0]), "long": ("x" * 50, [1] * 50)}
    fig = lm_routes.plot_text_samples(samples, 2, width=20, max_lines=4)
    assert [ax.get_title(loc="left") for ax in fig.axes] == list(samples)
    assert [ax.get_ylim()[0] for ax in fig.axes] == [-1, -3, -3]
    heights = [ax.get_window_extent().height / -ax.get_ylim()[0] for ax in fig.axes]
    assert max(heights) - min(heights) < 0.5  # the same tile height in every grid (pixels)
    boxes = [ax.get_window_extent() for ax in fig.axes]
    assert all(a.y0 > b.y1 for a, b in zip(boxes[:-1], boxes[1:], strict=True)), "grids overlap"
    with pytest.raises(ValueError, match="samples must be a non-empty dict"):
        lm_routes.plot_text_samples({}, 2)
    with pytest.raises(TypeError, match=r"samples\['a'\] must be a \(text, experts\) pair"):
        lm_routes.plot_text_samples({"a": "text"}, 2)


# ----------------------------------------------------------------------------- legends never cover data

def legend_problems(fig) -> list[str]:
    """Legends that overlap any axes' data area, or stick out of the figure (on the drawn figure)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    for i, ax in enumerate(fig.axes):
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for j, other in enumerate(fig.axes):
            if box.overlaps(other.get_window_extent(renderer)):
                problems.append(f"the legend of axes {i} covers the data area of axes {j}")
        if not (box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1):
            problems.append(f"the legend of axes {i} is cut by the figure's edge")
        for label in (*ax.get_xticklabels(), ax.xaxis.label) if ax.axison else ():
            if label.get_text() and box.overlaps(label.get_window_extent(renderer)):
                problems.append(f"the legend of axes {i} covers an x label")
    return problems


def all_legend_figures():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8) * 0.5, size=300)
    history = np.array([[30, 10, 5], [25, 15, 5], [20, 10, 20]])
    yield "expert load", viz.plot_expert_load([120, 40, 10, 30], capacity=119, ylim=130)
    yield "expert load, capacity near the top", viz.plot_expert_load([30, 40, 10, 30], capacity=110, ylim=112)
    yield "confidence", viz.plot_confidence_histogram(probs, top_k=2)
    yield "confidence, near 1", viz.plot_confidence_histogram(np.eye(8)[rng.integers(0, 8, 300)] * 0.98 + 0.0025,
                                                              top_k=2)
    yield "layer load", lm_routes.plot_layer_load(np.array([[90, 5, 3, 2], [1, 1, 1, 97]]))
    yield "history", viz.plot_load_history(history)
    yield "text", lm_routes.plot_text_experts("abc\nde", [0, 1, 2, 3, 0, 1], 4)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.6))
    axes = axes.ravel()
    viz.plot_expert_load([120, 40, 10, 30], capacity=60, ax=axes[0])
    viz.plot_confidence_histogram(probs, 2, ax=axes[1])
    lm_routes.plot_layer_load(np.array([[90, 5, 3, 2]]), ax=axes[2])
    viz.plot_load_history(history, ax=axes[3])
    fig.subplots_adjust(hspace=0.8, bottom=0.15)
    yield "four panels", fig


def test_no_legend_covers_data_or_labels():
    for name, fig in all_legend_figures():
        assert legend_problems(fig) == [], name
        plt.close(fig)


def test_legend_problems_can_fail():
    fig, ax = plt.subplots()
    ax.bar([0, 1], [5, 5], label="bars")
    ax.legend(loc="upper right")
    assert legend_problems(fig) == ["the legend of axes 0 covers the data area of axes 0"]


# ----------------------------------------------------------------------------- redrawing on the same axes

def png_of(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


def routing_data(num_experts, top_k, capacity, seed):
    """Probabilities, choices and keep mask of a random router, and what plot_expert_load needs."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(40, num_experts)) + np.linspace(2.0, 0.0, num_experts)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    indices = np.argsort(-probs, 1)[:, :top_k]
    keep = np.ones(indices.shape, bool)
    keep[rng.random(indices.shape) < 0.2] = False
    load = np.bincount(indices.reshape(-1), minlength=num_experts)
    kept = np.bincount(indices.reshape(-1)[keep.reshape(-1)], minlength=num_experts)
    history = rng.integers(1, 50, size=(int(seed) % 4 + 2, num_experts))
    return probs, indices, keep, load, kept, capacity, history


# each panel of the routing dashboard, with the arguments the dashboard passes
PANELS = {
    "load": lambda d, ax: viz.plot_expert_load(d[3], d[5], d[4], ax=ax, ylim=3.0 * d[3].mean(),
                                               title=f"{d[3].sum()} slots\nsecond line"),
    "heatmap": lambda d, ax: viz.plot_routing_heatmap(d[0], d[1], d[2], ax=ax, colorbar=False, title="probs"),
    "confidence": lambda d, ax: viz.plot_confidence_histogram(d[0], d[1].shape[1], ax=ax),
    "history": lambda d, ax: viz.plot_load_history(d[6], ax=ax),
}


@pytest.mark.parametrize("panel", list(PANELS))
def test_clear_plot_then_redraw_is_the_fresh_picture(panel):
    """A plot drawn on a cleared axes (after other data, other expert counts, with and without a
    capacity) is pixel for pixel the plot drawn on a fresh axes: what the dashboard redraw relies on."""
    draw = PANELS[panel]
    sequence = [routing_data(8, 2, 12, 0), routing_data(8, 2, None, 1), routing_data(4, 1, 30, 2),
                routing_data(16, 4, 7, 3), routing_data(8, 2, 12, 4)]
    kept_fig, kept_ax = plt.subplots(figsize=(4, 3))
    for i, data in enumerate(sequence):
        if i:
            viz.clear_plot(kept_ax)
        draw(data, kept_ax)
        fresh_fig, fresh_ax = plt.subplots(figsize=(4, 3))
        draw(data, fresh_ax)
        assert png_of(kept_fig) == png_of(fresh_fig), f"{panel}: step {i} differs from a fresh axes"
        assert kept_ax.get_ylim() == fresh_ax.get_ylim() and kept_ax.get_title() == fresh_ax.get_title()
        plt.close(fresh_fig)


# each panel's in-place update, with the arguments the dashboard passes
UPDATES = {
    "load": lambda d, ax: viz.update_expert_load(ax, d[3], d[5], d[4], ylim=3.0 * d[3].mean(),
                                                 title=f"{d[3].sum()} slots\nsecond line"),
    "heatmap": lambda d, ax: viz.update_routing_heatmap(ax, d[0], d[1], d[2], title="probs"),
    "confidence": lambda d, ax: viz.update_confidence_histogram(ax, d[0], d[1].shape[1], ylim=40),
    "history": lambda d, ax: viz.update_load_history(ax, d[6]),
}
FIXED_PANELS = PANELS | {"confidence": lambda d, ax: viz.plot_confidence_histogram(d[0], d[1].shape[1], ax=ax,
                                                                                    ylim=40)}


@pytest.mark.parametrize("panel", list(UPDATES))
def test_update_in_place_is_the_fresh_picture(panel):
    """Changing a plot's artists (bar heights, image data, step values, line data, texts) gives, pixel
    for pixel, the plot drawn anew; an axes with a plot of another shape is left alone (False)."""
    plot, update = FIXED_PANELS[panel], UPDATES[panel]
    same_shape = [routing_data(8, 2, 12, 0), routing_data(8, 2, 12, 1), routing_data(8, 2, 30, 4),
                  routing_data(8, 2, 5, 5)]
    kept_fig, kept_ax = plt.subplots(figsize=(4, 3))
    plot(same_shape[0], kept_ax)
    for i, data in enumerate(same_shape[1:], 1):
        assert update(data, kept_ax) is True
        fresh_fig, fresh_ax = plt.subplots(figsize=(4, 3))
        plot(data, fresh_ax)
        assert png_of(kept_fig) == png_of(fresh_fig), f"{panel}: update {i} differs from a fresh plot"
        plt.close(fresh_fig)
    other = {"load": routing_data(4, 1, 30, 2), "heatmap": routing_data(4, 1, 30, 2),
             "confidence": routing_data(8, 3, 12, 2), "history": None}[panel]
    if other is not None:  # another number of experts or top-k: not this plot's shape
        before = png_of(kept_fig)
        assert update(other, kept_ax) is False
        assert png_of(kept_fig) == before
    empty_fig, empty_ax = plt.subplots()
    assert update(same_shape[1], empty_ax) is False  # nothing drawn there yet


def test_update_without_capacity_line_refuses_a_capacity():
    fig, ax = plt.subplots()
    viz.plot_expert_load([5, 3, 1], ylim=10)
    viz.plot_expert_load([5, 3, 1], ax=ax, ylim=10)
    assert viz.update_expert_load(ax, [5, 3, 1], capacity=4, ylim=10) is False
    assert viz.update_expert_load(ax, [9, 3, 12], ylim=10) is True
    assert [t.get_text() for t in ax.texts] == ["12"]  # the cut bar's count, the old ones gone


def test_clear_plot_leaves_an_empty_axes():
    fig, ax = plt.subplots()
    viz.plot_expert_load([50, 10, 80], capacity=40, ylim=60)
    viz.plot_expert_load([50, 10, 80], capacity=40, ylim=60, ax=ax)
    viz.plot_routing_heatmap(np.full((3, 2), 0.5), [[0], [1], [1]], [[True], [False], [True]], ax=ax,
                             colorbar=False)
    ticks = ax.xaxis.get_major_ticks()
    viz.clear_plot(ax)
    assert not (ax.lines or ax.patches or ax.collections or ax.images or ax.texts or ax.containers)
    assert ax.get_legend() is None and ax.get_legend_handles_labels() == ([], [])
    assert not np.isfinite(ax.dataLim.get_points()).all()  # forgotten: the next data sets the limits
    assert ax.xaxis.get_major_ticks()[0] is ticks[0]  # the axes and its ticks stay


# ----------------------------------------------------------------------------- the Chinese edition

HAN = re.compile(r"[\u4e00-\u9fff]")


def texts_of(ax) -> dict[str, str]:
    """What a learner reads on ``ax``: title, axis labels, legend entries, a colour bar's label."""
    legend = ax.get_legend()
    found = {"title": ax.get_title() or ax.get_title(loc="left"), "x label": ax.get_xlabel(),
             "y label": ax.get_ylabel()}
    if legend is not None:
        found |= {f"legend {i}": t.get_text() for i, t in enumerate(legend.get_texts())}
    return {name: text for name, text in found.items() if text}


def not_chinese(fig) -> list[str]:
    """Every text of ``fig``'s axes (see ``texts_of``) without a Chinese character."""
    return [f"axes {i} {name}: {text!r}" for i, ax in enumerate(fig.axes) for name, text in texts_of(ax).items()
            if not HAN.search(text)]


def missing_glyphs(fig) -> list[str]:
    """matplotlib's warnings about characters no font of the figure could draw (drawn as empty boxes)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def chinese_figures():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=40)
    indices = np.argsort(-probs, 1)[:, :2]
    yield "expert load", viz.plot_expert_load([50, 10, 80, 20], capacity=40), 1
    yield "expert load, dropless", viz.plot_expert_load([50, 10, 80, 20]), 1
    yield "heatmap", viz.plot_routing_heatmap(probs, indices, np.ones(indices.shape, bool)), 1  # + colour bar
    yield "confidence", viz.plot_confidence_histogram(probs, top_k=2), 1
    yield "layer load", lm_routes.plot_layer_load(np.array([[10, 30], [20, 20]])), 1
    yield "text", lm_routes.plot_text_experts("天地 ab", [0, 1, -1, 1, 0], 2), 0  # the tiles' characters are the text
    yield "domains", lm_routes.plot_domain_expert_heatmap([[30, 10], [0, 40]], ["英文", "中文"]), 1
    yield "history", viz.plot_load_history([[30, 10], [25, 15], [20, 20]]), 1
    layer = MoELayer(8, 16, 4, 2, seed=0)
    x = ms.Tensor(np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32))
    yield "capacity sweep", viz.plot_capacity_sweep(capacity_sweep(layer, x, [0.5, 1.0, 2.0])), 2


def test_figures_speak_chinese(zh_plots):
    """Titles, axis labels, legends and colour-bar labels are Chinese (the numbers stay), and every
    character is drawn by a font that has it: no empty boxes."""
    for name, fig, axes_with_text in chinese_figures():
        assert not_chinese(fig) == [], name
        assert sum(bool(texts_of(ax)) for ax in fig.axes) >= axes_with_text, name
        assert missing_glyphs(fig) == [], name
        plt.close(fig)
    fig = viz.plot_expert_load([50, 10, 80, 20], capacity=40)
    title = fig.axes[0].get_title()
    assert all(number in title for number in ("40", "50", "160", "31.2%", "2.00")), title
    heatmap = viz.plot_routing_heatmap(np.full((3, 2), 0.5))
    assert HAN.search(heatmap.axes[1].get_ylabel())  # the colour bar's label


def test_chinese_legends_cover_no_data_or_labels(zh_plots):
    """The legend checks of ``test_no_legend_covers_data_or_labels`` on the Chinese figures: Chinese
    labels have other widths, and the legends under the axes must still fit."""
    for name, fig in all_legend_figures():
        assert not_chinese(fig) == [], name
        assert legend_problems(fig) == [], name
        plt.close(fig)


def test_chinese_text_grid_keeps_its_legend_beside_the_tiles(zh_plots):
    text = "床前明月光，\nmixed 天地 12+7=19"
    fig = lm_routes.plot_text_experts(text, np.arange(len(text)) % 5 - 1, 5, width=20)
    ax = fig.axes[0]
    assert not_chinese(fig) == []  # the title and every legend entry ("none", "expert 0", ...)
    assert missing_glyphs(fig) == []  # draws the figure
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend.x0 >= max(p.get_window_extent().x1 for p in ax.patches) and legend.x1 <= fig.bbox.x1


@pytest.mark.parametrize("panel", list(UPDATES))
def test_update_after_a_language_switch_draws_anew(panel):
    """A plot drawn in English is not updated in place once the language is Chinese (its axis labels and
    legend would stay English): ``update_*`` says False, the plot is drawn anew, then updates work again
    and give the fresh Chinese picture."""
    plot, update = FIXED_PANELS[panel], UPDATES[panel]
    first, second = routing_data(8, 2, 12, 0), routing_data(8, 2, 12, 1)
    fig, ax = plt.subplots(figsize=(4, 3))
    plot(first, ax)
    english = ax.get_xlabel()
    set_language("zh")
    try:
        with chinese_font():  # what moe_lab.setup(lang="zh") sets with the language
            before = png_of(fig)
            assert update(second, ax) is False and png_of(fig) == before
            viz.clear_plot(ax)
            plot(first, ax)
            assert ax.get_xlabel() != english
            assert update(second, ax) is True
            fresh_fig, fresh_ax = plt.subplots(figsize=(4, 3))
            plot(second, fresh_ax)
            assert png_of(fig) == png_of(fresh_fig)
    finally:
        set_language("en")
    assert update(second, ax) is False  # and back: the Chinese plot is not updated in English
    plt.close(fig)
