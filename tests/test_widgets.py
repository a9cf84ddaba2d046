"""moe_lab.viz (simulate, widgets, dashboards): the NumPy routing simulation matches MoELayer, balancing
works, the dashboards show the same tokens as the notebook and the checkers, a kept figure redraws the
picture a fresh figure draws (pixel for pixel), and no widget value makes a dashboard callback raise
(every control stepped through its range from the kernel side, no browser needed), in English and in
Chinese (the ``zh`` tests pass once the Chinese catalog has the dashboards' messages)."""

import base64
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
from PIL import Image  # noqa: E402

from moe_lab import balance  # noqa: E402
from moe_lab.core import reference  # noqa: E402
from moe_lab.core.capacity import expert_capacity, keep_mask  # noqa: E402
from moe_lab.core.layer import MoELayer  # noqa: E402
from moe_lab.core.reference import keep_numpy  # noqa: E402
from moe_lab.exercises import nb05  # noqa: E402
from moe_lab.i18n import set_language  # noqa: E402
from moe_lab.lm import routes  # noqa: E402
from moe_lab.lm.corpus import DOMAINS, load_corpus  # noqa: E402
from moe_lab.lm.model import LMConfig, TinyMoELM  # noqa: E402
from moe_lab.lm.routes import route_text  # noqa: E402
from moe_lab.viz import figures as viz  # noqa: E402
from moe_lab.viz import lm_routes, simulate  # noqa: E402
from moe_lab.viz import widgets as vwidgets  # noqa: E402
from moe_lab.viz.dashboards import SAMPLE_TEXTS, YOUR_TEXT, ModelDashboard, RoutingDashboard  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- simulation == MoELayer

@pytest.mark.parametrize("capacity_factor", [None, 0.5, 1.0, 1.25])
@pytest.mark.parametrize("drop_policy", ["position", "priority"])
@pytest.mark.parametrize("normalize", [True, False])
def test_route_logits_matches_moelayer(make_x, capacity_factor, drop_policy, normalize):
    layer = MoELayer(8, 16, num_experts=4, top_k=2, capacity_factor=capacity_factor, drop_policy=drop_policy,
                     norm_topk_prob=normalize, seed=3)
    layer.router.selection_bias.set_data(ms.Tensor(np.array([0.05, -0.02, 0.0, 0.01], np.float32)))
    x = make_x(40, 8, seed=1)
    routing = layer.route(x)
    sim = simulate.route_logits(routing.logits.asnumpy(), 2, capacity_factor=capacity_factor,
                               drop_policy=drop_policy, normalize=normalize,
                               selection_bias=layer.router.selection_bias.asnumpy())
    np.testing.assert_array_equal(sim.indices, routing.indices.asnumpy())
    np.testing.assert_array_equal(sim.keep, routing.keep.asnumpy())
    np.testing.assert_allclose(sim.probs, routing.probs.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(sim.weights, routing.weights.asnumpy(), atol=1e-6)
    assert sim.capacity == routing.capacity
    np.testing.assert_array_equal(sim.load(), routing.load())
    np.testing.assert_array_equal(sim.kept(), routing.kept())
    assert sim.dropped() == routing.dropped()
    if capacity_factor is not None:
        assert routing.dropped() > 0 or capacity_factor > 1  # the small factors really drop something


@pytest.mark.parametrize("drop_policy", ["position", "priority"])
def test_keep_mask_numpy_matches_capacity_module_and_reference(drop_policy):
    rng = np.random.default_rng(0)
    for trial in range(5):
        n, e, k = 50, 6, 3
        indices = np.stack([rng.permutation(e)[:k] for _ in range(n)])
        weights = rng.random((n, k))
        cap = expert_capacity(n, e, k, 0.8)
        mine = simulate.keep_mask_numpy(indices, weights, e, cap, drop_policy)
        theirs = keep_mask(ms.Tensor(indices.astype(np.int32)), ms.Tensor(weights.astype(np.float32)), e, cap,
                           drop_policy).asnumpy()
        np.testing.assert_array_equal(mine, theirs, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(mine, keep_numpy(indices, weights, e, 0.8, drop_policy))
        assert (~mine).sum() > 0


def test_simulated_capacity_is_the_course_formula():
    r = simulate.simulate_routing(500, 8, 2, 1.1)
    assert r.capacity == expert_capacity(500, 8, 2, 1.1) == 138  # ceil(1.1 * 500 * 2 / 8) = 137.5 -> 138
    assert (r.kept() <= r.capacity).all() and r.kept().sum() + r.dropped() == 1000
    assert simulate.simulate_routing(500, 8, 2, None).capacity is None


def test_synthetic_logits_knobs():
    base = simulate.synthetic_logits(200, 4, seed=5)
    np.testing.assert_allclose(simulate.synthetic_logits(200, 4, temperature=2.0, seed=5), base / 2)
    np.testing.assert_array_equal(simulate.synthetic_logits(200, 4, noise=0.0, seed=5), base)
    assert not np.allclose(simulate.synthetic_logits(200, 4, noise=1.0, seed=5), base)
    skewed = simulate.synthetic_logits(200, 4, skew=1.5, seed=5)
    np.testing.assert_allclose(skewed - base, np.broadcast_to([1.5, 1.0, 0.5, 0.0], base.shape))


def test_skew_unbalances_and_temperature_changes_confidence():
    flat = simulate.simulate_routing(2000, 8, 2, None, skew=0.0)
    skewed = simulate.simulate_routing(2000, 8, 2, None, skew=2.0)
    assert balance.max_over_mean(skewed.load()) > 2 * balance.max_over_mean(flat.load())
    sharp = simulate.simulate_routing(2000, 8, 2, None, temperature=0.25)
    soft = simulate.simulate_routing(2000, 8, 2, None, temperature=4.0)
    assert sharp.probs.max(1).mean() > 0.7 > 0.3 > soft.probs.max(1).mean()
    # temperature rescales the scores: without noise and bias the chosen experts do not change
    np.testing.assert_array_equal(sharp.indices, soft.indices)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"num_tokens": 0}, ValueError, "num_tokens must be >= 1"),
    ({"top_k": 9}, ValueError, "top_k must be <= 8"),
    ({"temperature": 0.0}, ValueError, "temperature must be > 0.0"),
    ({"noise": -1.0}, ValueError, "noise must be >= 0.0"),
    ({"capacity_factor": "big"}, TypeError, "capacity_factor must be a number or None"),
    ({"drop_policy": "random"}, ValueError, "drop_policy must be one of 'position', 'priority'"),
])
def test_simulate_routing_bad_input(kwargs, error, words):
    args = {"num_tokens": 64, "num_experts": 8, "top_k": 2, "capacity_factor": 1.0} | kwargs
    with pytest.raises(error) as info:
        simulate.simulate_routing(**args)
    assert words in str(info.value)


# ----------------------------------------------------------------------------- balancing

def test_aux_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(64, 5))
    r = simulate.route_logits(logits, 2)

    def loss(offset):  # f held fixed (a count has no gradient), P moves with the offset
        probs = reference.softmax(logits + offset)
        return balance.switch_loss_numpy(probs, r.indices)

    grad = simulate.switch_loss_grad_offset(r.probs, r.indices)
    eps = 1e-6
    numeric = [(loss(eps * np.eye(5)[j]) - loss(-eps * np.eye(5)[j])) / (2 * eps) for j in range(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_bias_step_is_balance_bias_update():
    load = np.array([40.0, 10.0, 25.0, 25.0])
    run = simulate.simulate_balancing("bias", 1, num_tokens=50, num_experts=4, top_k=2, skew=2.0)
    first = run.train_loads[0].astype(np.float32)  # the training batch behind the one update
    np.testing.assert_array_equal(first, simulate.simulate_routing(50, 4, 2, skew=2.0, seed=1).load())
    want = balance.bias_update(ms.Tensor(first), simulate.BIAS_RATE).asnumpy()
    np.testing.assert_allclose(run.selection_bias, want, atol=1e-7)
    assert balance.bias_update(ms.Tensor(load.astype(np.float32)), 1.0).asnumpy().tolist() == [-1, 1, 0, 0]
    # the evaluation batch, routed with the new bias, is the last history row and the routing shown
    again = simulate.simulate_routing(50, 4, 2, skew=2.0, seed=0, selection_bias=run.selection_bias)
    np.testing.assert_array_equal(run.history[-1], again.load())
    np.testing.assert_array_equal(run.routing.indices, again.indices)


@pytest.mark.parametrize("method", ["aux", "bias"])
def test_balancing_reduces_the_skew(method):
    kw = {"num_tokens": 512, "num_experts": 8, "top_k": 2, "skew": 2.0, "seed": 0}
    none = simulate.simulate_balancing("none", 10, **kw)
    run = simulate.simulate_balancing(method, 10, **kw)
    np.testing.assert_array_equal(run.history[0], none.history[0])  # same start
    start, end = (balance.max_over_mean(h) for h in (run.history[0], run.history[-1]))
    assert end < 0.7 * start
    assert end < 0.7 * balance.max_over_mean(none.history[-1])
    assert run.history.shape == (11, 8) and (run.history.sum(1) == 1024).all()
    assert run.train_loads.shape == (10, 8)


@pytest.mark.parametrize("steps", [0, 1, 10])
def test_no_balancing_is_the_plain_routing_whatever_the_steps(steps):
    """The dashboard's batch for balancing "none" (any number of steps) is the notebook's batch."""
    kw = {"num_tokens": 512, "num_experts": 8, "top_k": 2, "capacity_factor": 1.25, "skew": 1.0, "seed": 0}
    run = simulate.simulate_balancing("none", steps, **kw)
    plain = simulate.simulate_routing(**kw)
    np.testing.assert_array_equal(run.routing.indices, plain.indices)
    np.testing.assert_array_equal(run.routing.keep, plain.keep)
    assert (run.history == plain.load()).all() and run.history.shape == (steps + 1, 8)
    assert run.train_loads.shape == (0, 8)
    # balancing with 0 steps changes nothing either
    np.testing.assert_array_equal(simulate.simulate_balancing("aux", 0, **kw).routing.indices, plain.indices)


def test_balancing_bad_method():
    with pytest.raises(ValueError, match="method must be one of 'none', 'aux', 'bias'; got 'magic'"):
        simulate.simulate_balancing("magic", 3, num_tokens=8, num_experts=2, top_k=1)


# ----------------------------------------------------------------------------- the routing dashboard

def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def fresh_pixels(dash, values) -> np.ndarray:
    """The picture of a new figure for ``values`` (a full draw, no kept state)."""
    fig = dash.figure(**values)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


@pytest.fixture
def dash():
    return RoutingDashboard(num_tokens=128, quiet=True)


def test_top_k_is_limited_to_the_number_of_experts(dash):
    c = dash.controls
    c["num_experts"].value = 16
    c["top_k"].value = 8
    c["num_experts"].value = 3
    assert c["top_k"].max == 3 and c["top_k"].value == 3
    c["top_k"].value = 7  # beyond the maximum: the slider clamps it
    assert c["top_k"].value == 3
    c["num_experts"].value = 12
    assert c["top_k"].max == 12 and c["top_k"].value == 3


def test_every_control_through_every_value_redraws_without_error():
    """What a learner can do with each control, from the kernel side: every value of every control
    (the notebook's starting dashboard, 512 tokens)."""
    dash = RoutingDashboard(num_tokens=512, seed=0, quiet=True)
    open_before = len(plt.get_fignums())
    n = dash.step_through()
    expected = sum(len(dash.control_values(name)) + 1 for name in dash.controls)
    # a value equal to the current one does not fire; all others redraw once
    assert n >= expected - 2 * len(dash.controls)
    assert len(plt.get_fignums()) == open_before  # nothing left for the inline backend to show
    assert dash.values()["num_experts"] == 8 and dash.values()["top_k"] == 2  # restored
    assert len(dash.timings) == dash.renders


def test_every_experts_topk_pair_and_extreme_settings_draw(dash):
    for e in range(2, 17):
        for k in sorted({1, (e + 1) // 2, e}):
            values = {"num_experts": e, "top_k": k, "capacity_factor": 0.5, "dropless": False, "temperature": 0.25,
                      "noise": 2.0, "skew": 3.0, "balancing": ("aux", "bias", "none")[e % 3], "steps": e % 4}
            assert pixels(dash.render_png(**values)).shape == (528, 800, 3)
    # a stale top_k larger than E (an observer order we do not control) is clipped, not an error
    fig = dash.figure(num_experts=2, top_k=8, capacity_factor=3.0, dropless=True, temperature=4.0, noise=0.0,
                      skew=0.0, balancing="bias", steps=20)
    ax = fig.axes[0]
    assert "dropless" in ax.get_title()
    assert len(ax.containers[0].patches) == 2


def test_figure_shows_the_simulation(dash):
    values = dash.values() | {"skew": 2.0, "balancing": "aux", "steps": 5}
    run = dash.run(**values)
    fig = dash.figure(**values)
    load_ax, heat_ax, conf_ax, hist_ax = fig.axes
    processed = np.array([p.get_height() for p in load_ax.containers[0].patches])
    np.testing.assert_array_equal(processed, run.routing.kept())
    assert f"capacity {run.routing.capacity}" in load_ax.get_title()
    np.testing.assert_allclose(heat_ax.images[0].get_array(), run.routing.probs[:48].T)
    assert hist_ax.get_lines()[0].get_ydata().shape == (6,)
    assert "after 5 aux steps" in load_ax.get_title()


def test_dashboard_shows_the_notebook_batch_and_the_checkers_numbers():
    """Same settings, same tokens: with balancing none the panel's drops and max/mean are those of
    simulate_routing (notebook section 2), whatever the update steps, and the exercise-2 checker
    quotes the drops the dashboard shows."""
    dash = RoutingDashboard(num_tokens=512, seed=0, quiet=True)
    for steps in (0, 10, 20):
        for cf in (1.25, 1.5):
            values = dash.values() | {"capacity_factor": cf, "steps": steps}
            title = dash.figure(**values).axes[0].get_title()
            plain = simulate.simulate_routing(512, 8, 2, cf, skew=1.0, seed=0)
            assert f"dropped {plain.dropped()} of 1024 slots" in title
            assert f"max/mean {balance.max_over_mean(plain.load()):.2f}" in title
            plt.close("all")
    best = nb05.smallest_dropless_factor()
    lower = dash.figure(**(dash.values() | {"capacity_factor": best - 0.25})).axes[0].get_title()
    drops = int(re.search(r"dropped (\d+) of", lower).group(1))
    assert f"one step lower drops {drops} slots" in nb05.check_min_capacity_factor(best).message
    at_best = dash.figure(**(dash.values() | {"capacity_factor": best})).axes[0].get_title()
    assert "dropped 0 of" in at_best


def test_quiet_dashboard_renders_but_never_displays(monkeypatch):
    shown = []
    monkeypatch.setattr(vwidgets, "show_png_bytes", lambda png: shown.append(png))
    quiet = RoutingDashboard(num_tokens=64, quiet=True)
    assert quiet.renders == 1 and quiet.step_through(max_values=2) > 0 and shown == []
    loud = RoutingDashboard(num_tokens=64)
    loud.controls["skew"].value = 2.0
    assert len(shown) == 2 and loud.renders == 2
    loud.step_through(max_values=2)
    assert len(shown) == 2  # stepping never displays, and the dashboard is loud again afterwards
    loud.controls["skew"].value = 1.5
    assert len(shown) == 3
    assert pixels(shown[-1]).shape == (528, 800, 3)


def test_redraw_in_place_is_the_fresh_picture_pixel_for_pixel():
    """Slider moves redraw one kept figure, mostly by pasting its background and drawing the data
    only; after every move the picture equals a full draw of a new figure, across changes of E,
    top-k, dropless, balancing, steps and an invalid top-k."""
    open_before = plt.get_fignums()
    dash = RoutingDashboard(num_tokens=96, quiet=True)
    c = dash.controls
    moves = [("skew", 2.0), ("skew", 2.25), ("temperature", 0.5), ("noise", 1.0), ("capacity_factor", 0.75),
             ("num_experts", 12), ("top_k", 4), ("dropless", True), ("capacity_factor", 0.5), ("dropless", False),
             ("balancing", "bias"), ("steps", 3), ("steps", 4), ("num_experts", 3), ("noise", 1.5),
             ("temperature", 0.25), ("balancing", "none"), ("num_experts", 16), ("skew", 0.0), ("skew", 0.25)]
    for name, value in moves:
        c[name].value = value
        got = pixels(dash.render_png(**dash.values()))
        want = fresh_pixels(dash, dash.values())
        assert got.shape == want.shape
        differ = int((got != want).any(-1).sum())
        assert differ == 0, f"after {name}={value}: {differ} pixels differ from a new figure's"
    kept = dash._kept
    assert kept.fast_draws >= 8 and kept.full_draws >= 4  # both paths were compared
    assert plt.get_fignums() == open_before  # the kept figure is not pyplot's: nothing left to show again
    # the kept figure's artists are the routing numbers of the current values
    run = dash.run(**dash.values())
    load_ax, heat_ax = kept.figure.axes[:2]
    np.testing.assert_array_equal([p.get_height() for p in load_ax.containers[0].patches], run.routing.kept())
    np.testing.assert_allclose(heat_ax.images[0].get_array(), run.routing.probs[:48].T)
    assert len(heat_ax.images) == 1 and len(load_ax.containers) == 2  # old artists are gone


def test_slider_moves_that_keep_the_frame_take_the_fast_path():
    """Moves that keep the frame change the artists in place (the same bar, image and step objects)
    and draw only the data; a new number of experts plots the panels anew and draws the frame."""
    dash = RoutingDashboard(num_tokens=512, seed=0, quiet=True)
    kept = dash._kept
    full = kept.full_draws
    load_ax, heat_ax, conf_ax, hist_ax = kept.figure.axes
    artists = [load_ax.containers[0], heat_ax.images[0], conf_ax.patches[0], hist_ax.lines[0]]
    for name, value in [("skew", 1.25), ("skew", 1.5), ("temperature", 1.25), ("noise", 0.25),
                        ("capacity_factor", 1.5), ("balancing", "aux"), ("steps", 9), ("steps", 8)]:
        dash.controls[name].value = value
    assert kept.full_draws == full  # none of these changes a limit, a tick or a legend
    now = [load_ax.containers[0], heat_ax.images[0], conf_ax.patches[0], hist_ax.lines[0]]
    assert all(a is b for a, b in zip(artists, now, strict=True))
    run = dash.run(**dash.values())
    np.testing.assert_array_equal([p.get_height() for p in load_ax.containers[0]], run.routing.kept())
    dash.controls["num_experts"].value = 6  # new x ticks: the background is drawn again
    assert kept.full_draws == full + 1
    assert load_ax.containers[0] is not artists[0] and len(load_ax.containers[0]) == 6


@pytest.mark.parametrize("top_k", [1, 2])
def test_axis_labels_and_legends_are_inside_the_picture_for_every_number_of_experts(dash, top_k):
    """The y label of the first panel was cut at E = 2 (4-digit tick labels); legends sit under the axes."""
    for e in range(2, 17):
        fig = dash.figure(**(dash.values() | {"num_experts": e, "top_k": top_k, "capacity_factor": 3.0}))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        inside = fig.bbox
        for ax in fig.axes:
            for label in (ax.yaxis.label, ax.xaxis.label, *ax.get_yticklabels(), ax.title):
                box = label.get_window_extent(renderer)
                assert box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= 0 and box.y1 <= inside.y1, \
                    (e, label.get_text())
            legend = ax.get_legend()
            if legend is not None:
                box = legend.get_window_extent(renderer)
                assert not box.overlaps(ax.bbox) and box.y0 >= 0, (e, "legend")
        plt.close(fig)


def test_mimebundle_has_the_widget_and_a_png_fallback(dash):
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert dash.output.layout.min_height == dash.min_height


def test_control_values_cover_each_range(dash):
    assert dash.control_values("num_experts") == list(range(2, 17))
    assert dash.control_values("capacity_factor")[0] == 0.5 and dash.control_values("capacity_factor")[-1] == 3.0
    assert dash.control_values("dropless") == [False, True]
    assert dash.control_values("balancing") == ["none", "aux", "bias"]
    assert dash.control_values("steps", max_values=3) == [0, 10, 20]


# ----------------------------------------------------------------------------- KeptFigure on its own

def simple_figure(fig, heights, ymax, label):
    ax = fig.axes[0] if fig.axes else fig.add_subplot(1, 1, 1)
    viz.clear_plot(ax)
    ax.bar(range(len(heights)), heights, color="C1", edgecolor="black", label="bars")
    ax.axhline(np.mean(heights), color="k", linestyle="--", label="mean")
    ax.set_ylim(0, ymax)
    ax.set_xlabel("x")
    ax.set_title(f"{label}: total {sum(heights)}")
    viz.legend_below(ax, ncol=2)
    fig.subplots_adjust(bottom=0.3)
    vwidgets.axis_below_data(fig)
    return fig


def test_kept_figure_equals_a_full_draw_and_redraws_the_frame_when_it_changes():
    kept = vwidgets.KeptFigure((4.0, 3.0), dpi=72)
    steps = [([3, 5, 2], 10, "a"), ([4, 1, 2], 10, "b"), ([4, 1, 9], 10, "c"), ([4, 1, 9], 12, "d"),
             ([1, 1], 12, "e"), ([2, 2], 12, "f")]
    paths = []
    for heights, ymax, label in steps:
        simple_figure(kept.figure, heights, ymax, label)
        before = kept.full_draws
        got = kept.rgba()[..., :3].copy()
        paths.append("full" if kept.full_draws > before else "fast")
        fresh = simple_figure(plt.figure(figsize=(4.0, 3.0), dpi=72), heights, ymax, label)
        fresh.canvas.draw()
        want = np.asarray(fresh.canvas.buffer_rgba())[..., :3]
        assert (got == want).all(), f"step {label}: {(got != want).any(-1).sum()} pixels differ"
    # a new y limit (d) and fewer bars (e: new x ticks) redraw the frame; data-only changes do not
    assert paths == ["full", "fast", "fast", "full", "full", "fast"]
    assert pixels(kept.render()).shape == (216, 288, 3)


def test_frame_key_sees_limits_ticks_labels_and_legends():
    def key_after(change):
        fig = simple_figure(plt.figure(figsize=(4, 3)), [3, 2, 1], 5, "b")
        change(fig.axes[0])
        return vwidgets.frame_key(fig)

    fig = simple_figure(plt.figure(figsize=(4, 3)), [1, 2, 3], 5, "a")
    key = vwidgets.frame_key(fig)
    simple_figure(fig, [3, 2, 1], 5, "b")
    assert vwidgets.frame_key(fig) == key  # new data and title: same frame
    assert key_after(lambda ax: ax.set_ylim(0, 6)) != key
    assert key_after(lambda ax: ax.set_xlabel("other")) != key
    assert key_after(lambda ax: ax.set_xticks([0, 1])) != key
    assert key_after(lambda ax: ax.get_legend().get_texts()[0].set_text("renamed")) != key


def test_data_artists_are_what_a_plot_function_adds():
    fig, ax = plt.subplots()
    viz.plot_expert_load([5, 3], capacity=4, ax=ax, title="t")
    found = vwidgets.data_artists(ax)
    assert ax.title in found and ax.patch not in found and ax.get_legend() not in found
    assert not any(s in found for s in ax.spines.values())
    assert all(p in found for p in ax.patches) and all(ln in found for ln in ax.lines)


def test_rgba_png_round_trip_and_bad_input():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    assert (pixels(vwidgets.rgba_png(rgba)) == rgba[..., :3]).all()
    with pytest.raises(ValueError, match=r"rgba must be an \[H, W, 4\] uint8 array, got shape \(4, 6\)"):
        vwidgets.rgba_png(np.zeros((4, 6), np.uint8))


# ----------------------------------------------------------------------------- an exercise as widgets

@pytest.mark.parametrize("text, want", [("", None), ("  ", None), ("3", 3), ("1.50", 1.5), ("2.0", 2.0),
                                        ("1e2", 100.0), (" aux ", "aux"), ("True", True), ("false", False),
                                        ("nan", "nan")])
def test_parse_answer(text, want):
    got = vwidgets.parse_answer(text)
    assert got == want and type(got) is type(want)


def test_parse_answer_bad_input():
    with pytest.raises(TypeError, match="text must be a str, got int"):
        vwidgets.parse_answer(3)


def test_exercise_box_checks_on_enter_and_on_the_button():
    box = vwidgets.ExerciseBox("<b>1.</b> question", nb05.check_app_best_balancing, placeholder="aux or bias")
    assert "question" in box.question.value and box.feedback.value == ""
    best = nb05.app_best_balancing()
    box.answer.value = best  # what the browser sends on Enter
    assert box.last and ">right<" in box.feedback.value
    box.answer.value = "none"
    assert not box.last and "not yet" in box.feedback.value and "answer &#x27;aux&#x27; or" in box.feedback.value
    box.answer.value = ""
    box.button.click()
    assert box.last is None and box.feedback.value == "type an answer in the box first."
    assert "application/vnd.jupyter.widget-view+json" in box._repr_mimebundle_()
    with pytest.raises(TypeError, match="check must be a checker function"):
        vwidgets.ExerciseBox("q", "not callable")


def test_app_max_mean_box_takes_a_number():
    box = vwidgets.ExerciseBox("q", nb05.check_app_max_mean)
    box.answer.value = f"{nb05.app_max_mean():.2f}"
    assert box.last


# ----------------------------------------------------------------------------- the trained-model dashboard

@pytest.fixture(scope="module")
def tiny_lm():
    return TinyMoELM(LMConfig(context=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32, num_experts=4, top_k=2))


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.mark.parametrize("text", ["a", "def f(x):\n    return x", "x" * 16, "床前明月光，疑是地上霜。 mixed 12+7=19"])
def test_route_text_batched_equals_route_text(tiny_lm, text):
    want, got = route_text(tiny_lm, text), routes.route_text_batched(tiny_lm, text)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.weights, want.weights, atol=1e-5)
    np.testing.assert_allclose(got.probs, want.probs, atol=1e-5)
    with pytest.raises(ValueError, match="text must not be empty"):
        routes.route_text_batched(tiny_lm, "")


def test_domain_expert_counts(tiny_lm, corpus):
    counts = routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=3, seed=7)
    assert counts.shape == (2, 4, 4)
    assert (counts.sum(-1) == 3 * 16 * 2).all()  # windows * context * top_k slots per domain and layer
    # the same windows, routed one domain at a time
    rng = np.random.default_rng(7)
    blocks = [corpus.batch("val", 3, 16, rng, domains=(d,))[0] for d in DOMAINS]
    indices = tiny_lm(ms.Tensor(blocks[2], ms.int32))[3]
    np.testing.assert_array_equal(counts[1, 2], np.bincount(indices[1].asnumpy().reshape(-1), minlength=4))
    first = routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=3, seed=7, first_choice=True)
    assert (first.sum(-1) == 3 * 16).all()
    np.testing.assert_array_equal(first[0, 2], np.bincount(indices[0].asnumpy()[:, 0], minlength=4))


def test_model_dashboard_draws_the_routing(tiny_lm, corpus):
    counts = routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=2)
    dash = ModelDashboard(tiny_lm, counts, quiet=True)
    text = "hello 天地"
    fig = dash.figure(text=text, layer=0, expert=-1)
    text_ax, load_ax, dom_ax = fig.axes
    r = routes.route_text_batched(tiny_lm, text)
    first = lm_routes.char_experts(text, r.top1()[0])
    colors = viz.expert_colors(4)
    tiles = [p for p in text_ax.patches if p.get_width() == 1]
    for tile, e in zip(tiles, first, strict=True):
        np.testing.assert_allclose(tile.get_facecolor()[:3], colors[e][:3])
    shares = [np.array([p.get_height() for p in c.patches]) for c in load_ax.containers]
    loads = np.stack([np.bincount(r.indices[li].reshape(-1), minlength=4) for li in range(2)])
    np.testing.assert_allclose(np.stack(shares, 1), loads / loads.sum(1, keepdims=True))
    np.testing.assert_allclose(dom_ax.images[0].get_array(), counts[0] / counts[0].sum(1, keepdims=True))
    # characters fill their tiles (they were ~7 px): at 80 dpi a glyph of the grid is >= 11 px tall
    fig.canvas.draw()
    heights = [t.get_window_extent(fig.canvas.get_renderer()).height for t in text_ax.texts]
    assert min(heights) >= 11
    # an empty text box is a message, not an error
    fig = dash.figure(text="", layer=1, expert=2)
    assert "type some text" in fig.axes[0].texts[0].get_text()


EDGE_TEXTS = ("", "a", "\n\n", "🙂 emoji, é and ü", "天" * 150 + "the end", "x" * 500)


def test_model_dashboard_every_control_and_odd_texts_never_raise(tiny_lm, corpus):
    """Every layer, every expert, every sample and texts a learner may type (empty, one letter, only
    newlines, emoji, a text longer than the panel), from the kernel side."""
    dash = ModelDashboard(tiny_lm, routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=1), quiet=True)
    redraws = dash.step_through(texts=[*SAMPLE_TEXTS.values(), *EDGE_TEXTS])
    assert redraws >= len(SAMPLE_TEXTS) + len(EDGE_TEXTS) + 4
    assert dash.text == SAMPLE_TEXTS["mixed"] and dash.sample.value == "mixed"  # restored
    assert dash.controls["expert"].options[-1] == ("expert 3", 3)
    with pytest.raises(ValueError, match=r"domain_counts must have shape \(layers, domains, experts\)"):
        ModelDashboard(tiny_lm, np.zeros((1, 4, 4)))


def test_text_box_button_and_sample_menu(tiny_lm, corpus, monkeypatch):
    shown = []
    monkeypatch.setattr(vwidgets, "show_png_bytes", lambda png: shown.append(png))
    dash = ModelDashboard(tiny_lm, routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=1))
    assert len(shown) == 1 and dash.sample.value == "mixed" and dash.text == SAMPLE_TEXTS["mixed"]
    # a sample fills the box and is routed at once
    dash.sample.value = "Chinese"
    assert dash.text_box.value == dash.text == SAMPLE_TEXTS["Chinese"] and len(shown) == 2
    # the learner's own text: the box sends it when it loses focus (or on the button): one redraw,
    # and the menu says it is the learner's text
    dash.text_box.value = "my own text\nwith a second line"
    assert dash.text == "my own text\nwith a second line" and len(shown) == 3
    assert dash.sample.value == YOUR_TEXT
    dash.route_button.click()  # nothing new to route: no second redraw of the same text
    assert len(shown) == 3
    # back to a sample, then "your text" brings the learner's text back
    dash.sample.value = "Python"
    assert dash.text == SAMPLE_TEXTS["Python"] and len(shown) == 4
    dash.sample.value = YOUR_TEXT
    assert dash.text == "my own text\nwith a second line" and len(shown) == 5
    # typing a sample's exact text names the sample
    dash.text_box.value = SAMPLE_TEXTS["arithmetic"]
    assert dash.sample.value == "arithmetic"
    # the layer and expert controls redraw without running the model again
    cached = len(dash._cache)
    dash.controls["layer"].value = 0
    dash.controls["expert"].value = 2
    assert len(shown) == 8 and len(dash._cache) == cached


def test_model_dashboard_before_a_text_was_routed_has_no_your_text(tiny_lm, corpus):
    dash = ModelDashboard(tiny_lm, routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=1), quiet=True)
    renders = dash.renders
    dash.sample.value = YOUR_TEXT  # no text of the learner yet: nothing changes
    assert dash.text == SAMPLE_TEXTS["mixed"] and dash.renders == renders


# ----------------------------------------------------------------------------- the Chinese edition

HAN = re.compile(r"[\u4e00-\u9fff]")


def test_the_load_title_counts_the_balancing_steps(dash):
    def heading(**values):
        return dash.figure(**(dash.values() | values)).axes[0].get_title().split("\n")[0]

    assert heading(dropless=True, balancing="aux", steps=1) == "tokens per expert (dropless) after 1 aux step"
    capacity = dash.run(**(dash.values() | {"balancing": "bias", "steps": 3})).routing.capacity
    assert heading(balancing="bias", steps=3) == f"tokens per expert (capacity {capacity}) after 3 bias steps"
    assert heading(balancing="bias", steps=0) == heading(balancing="none", steps=5) == \
        f"tokens per expert (capacity {capacity})"


def test_routing_dashboard_speaks_chinese(zh_plots):
    """Control labels and menu labels are Chinese, the menu values stay the code's; every panel's title,
    axis labels and legend, and the figure's title, are Chinese."""
    dash = RoutingDashboard(num_tokens=128, quiet=True)
    for name, control in dash.controls.items():
        if name != "top_k":  # "top-k" is the same word in Chinese
            assert HAN.search(control.description), name
    balancing = dash.controls["balancing"]
    assert [value for _label, value in balancing.options] == ["none", "aux", "bias"]
    assert all(HAN.search(label) for label, _value in balancing.options)
    fig = dash.figure(**(dash.values() | {"balancing": "aux", "steps": 3}))
    assert HAN.search(fig._suptitle.get_text())
    for i, ax in enumerate(fig.axes):
        texts = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
        assert all(HAN.search(t) for t in texts), (i, texts)
    assert "aux" in fig.axes[0].get_title() and "3" in fig.axes[0].get_title()  # method and steps kept


def test_chinese_dashboard_keeps_labels_and_legends_inside_the_picture(zh_plots):
    """The layout check of the English dashboard with Chinese labels (other widths), E = 2 ... 16."""
    dash = RoutingDashboard(num_tokens=128, quiet=True)
    for e in (2, 3, 8, 16):
        fig = dash.figure(**(dash.values() | {"num_experts": e, "top_k": 2, "capacity_factor": 3.0}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.canvas.draw()
        assert not [w for w in caught if "missing from font" in str(w.message)], e  # no empty boxes
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            for label in (ax.yaxis.label, ax.xaxis.label, *ax.get_yticklabels(), ax.title):
                box = label.get_window_extent(renderer)
                assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y0 >= 0 and box.y1 <= fig.bbox.y1, \
                    (e, label.get_text())
            if ax.get_legend() is not None:
                legend = ax.get_legend().get_window_extent(renderer)
                assert not legend.overlaps(ax.bbox) and legend.y0 >= 0 and legend.x1 <= fig.bbox.x1, (e, "legend")
        title = fig._suptitle.get_window_extent(renderer)
        assert title.x0 >= 0 and title.x1 <= fig.bbox.x1
        plt.close(fig)


def test_redraw_in_place_across_a_language_switch_is_the_fresh_picture():
    """A dashboard made in English, redrawn after the language changed to Chinese (and back), shows the
    picture a new figure draws in that language, pixel for pixel: the kept panels are drawn anew."""
    dash = RoutingDashboard(num_tokens=96, quiet=True)
    english = pixels(dash.render_png(**dash.values()))
    moves = [("skew", 2.0), ("temperature", 0.5), ("num_experts", 6), ("balancing", "bias"), ("steps", 3)]
    set_language("zh")
    try:
        with chinese_font():
            for i, (name, value) in enumerate([(None, None), *moves]):
                if name is not None:
                    dash.controls[name].value = value
                got = pixels(dash.render_png(**dash.values()))
                want = fresh_pixels(dash, dash.values())
                assert int((got != want).any(-1).sum()) == 0, f"in Chinese, after {name}={value}"
                if i == 0:
                    assert (got != english).any()  # the same numbers, Chinese words
    finally:
        set_language("en")
    got = pixels(dash.render_png(**dash.values()))
    assert int((got != fresh_pixels(dash, dash.values())).any(-1).sum()) == 0, "back in English"


def test_model_dashboard_speaks_chinese(tiny_lm, corpus, zh_plots):
    dash = ModelDashboard(tiny_lm, routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=1), quiet=True)
    for widget in (dash.sample, dash.text_box, dash.controls["layer"], dash.controls["expert"]):
        assert HAN.search(widget.description), widget
    assert HAN.search(dash.route_button.description) and HAN.search(dash.text_box.placeholder)
    # menu labels Chinese (Python stays Python), values the English names the code uses
    assert [value for _label, value in dash.sample.options] == [*SAMPLE_TEXTS, YOUR_TEXT]
    assert all(HAN.search(label) for label, value in dash.sample.options if value != "Python")
    assert dash.sample.value == "mixed" and HAN.search(dash.sample.label)
    assert all(HAN.search(label) for label, _value in dash.controls["expert"].options)
    fig = dash.figure(text="天地 hello", layer=0, expert=1)
    text_ax, load_ax, dom_ax = fig.axes
    assert all(HAN.search(ax.get_title(loc="left") or ax.get_title()) for ax in fig.axes)
    assert all(HAN.search(t.get_text()) for t in load_ax.get_xticklabels())  # "layer 0", "layer 1"
    domains = [t.get_text() for t in dom_ax.get_yticklabels()]
    assert len(domains) == len(DOMAINS) and sum(bool(HAN.search(d)) for d in domains) == len(DOMAINS) - 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    assert not [w for w in caught if "missing from font" in str(w.message)]
    empty = dash.figure(text="", layer=0, expert=-1)
    assert HAN.search(empty.axes[0].texts[0].get_text())
    plt.close("all")


def test_exercise_box_speaks_chinese(zh):
    box = vwidgets.ExerciseBox("<b>1.</b> 问题", nb05.check_app_best_balancing)
    assert HAN.search(box.button.description) and HAN.search(box.answer.placeholder)
    box.button.click()
    assert HAN.search(box.feedback.value) and box.last is None
    box.answer.value = nb05.app_best_balancing()
    assert box.last and HAN.search(box.feedback.value.split("</span>")[0])  # the verdict word
