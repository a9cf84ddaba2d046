"""moe_lab.viz (simulate, widgets, dashboards): the NumPy routing simulation matches MoELayer, balancing
works, and no widget value makes a dashboard callback raise (every control stepped through its range, no
browser needed)."""

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from moe_lab import balance  # noqa: E402
from moe_lab.core import reference  # noqa: E402
from moe_lab.core.capacity import expert_capacity, keep_mask  # noqa: E402
from moe_lab.core.layer import MoELayer  # noqa: E402
from moe_lab.core.reference import keep_numpy  # noqa: E402
from moe_lab.lm import routes  # noqa: E402
from moe_lab.lm.corpus import DOMAINS, load_corpus  # noqa: E402
from moe_lab.lm.model import LMConfig, TinyMoELM  # noqa: E402
from moe_lab.lm.routes import route_text  # noqa: E402
from moe_lab.viz import dashboards, simulate  # noqa: E402
from moe_lab.viz import figures as viz  # noqa: E402
from moe_lab.viz import widgets as vwidgets  # noqa: E402


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
    first = run.history[0].astype(np.float32)
    want = balance.bias_update(ms.Tensor(first), simulate.BIAS_RATE).asnumpy()
    np.testing.assert_allclose(run.selection_bias, want, atol=1e-7)
    assert balance.bias_update(ms.Tensor(load.astype(np.float32)), 1.0).asnumpy().tolist() == [-1, 1, 0, 0]


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


def test_balancing_bad_method():
    with pytest.raises(ValueError, match="method must be one of 'none', 'aux', 'bias'; got 'magic'"):
        simulate.simulate_balancing("magic", 3, num_tokens=8, num_experts=2, top_k=1)


# ----------------------------------------------------------------------------- the dashboard

@pytest.fixture
def dash():
    return dashboards.RoutingDashboard(num_tokens=128)


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


def test_every_control_through_its_range_redraws_without_error(dash):
    open_before = len(plt.get_fignums())
    n = dash.step_through()
    expected = sum(len(dash.control_values(name)) + 1 for name in dash.controls)
    # a value equal to the current one does not fire; all others redraw once
    assert n >= expected - 2 * len(dash.controls)
    assert len(plt.get_fignums()) == open_before  # every figure closed
    assert dash.values()["num_experts"] == 8 and dash.values()["top_k"] == 2  # restored


def test_every_experts_topk_pair_and_extreme_settings_draw(dash):
    for e in range(2, 17):
        for k in sorted({1, (e + 1) // 2, e}):
            fig = dash.figure(num_experts=e, top_k=k, capacity_factor=0.5, dropless=False, temperature=0.25,
                              noise=2.0, skew=3.0, balancing=("aux", "bias", "none")[e % 3], steps=e % 4)
            if e in (2, 16):
                fig.canvas.draw()  # the full render too (slower), at both ends of the range
            plt.close(fig)
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


def test_quiet_dashboard_draws_but_never_displays(monkeypatch):
    shown = []
    monkeypatch.setattr(vwidgets, "show_png", lambda fig, dpi: shown.append(fig))
    quiet = dashboards.RoutingDashboard(num_tokens=64, quiet=True)
    assert quiet.renders == 1 and quiet.step_through(max_values=2) > 0 and shown == []
    loud = dashboards.RoutingDashboard(num_tokens=64)
    loud.controls["skew"].value = 2.0
    assert len(shown) == 2 and loud.renders == 2
    loud.step_through(max_values=2)
    assert len(shown) == 2  # stepping never displays, and the dashboard is loud again afterwards
    loud.controls["skew"].value = 1.5
    assert len(shown) == 3


def test_redraw_reuses_one_figure_and_shows_the_fresh_picture(monkeypatch):
    """Slider moves redraw one kept figure (not pyplot's); each PNG equals a new dashboard's figure
    for the same values, across changes of E, top-k, dropless, balancing and an invalid top-k."""
    shown, shown_figs = [], []

    def show(fig, dpi):
        shown.append(vwidgets.figure_png(fig, dpi))
        shown_figs.append(fig)

    monkeypatch.setattr(vwidgets, "show_png", show)
    open_before = plt.get_fignums()
    dash = dashboards.RoutingDashboard(num_tokens=96)
    c = dash.controls
    moves = [("skew", 2.0), ("num_experts", 12), ("top_k", 4), ("dropless", True), ("capacity_factor", 0.5),
             ("dropless", False), ("balancing", "bias"), ("steps", 3), ("num_experts", 3), ("noise", 1.5),
             ("temperature", 0.25), ("balancing", "none"), ("num_experts", 16)]
    for name, value in moves:
        c[name].value = value
        fresh = dashboards.RoutingDashboard(num_tokens=96, quiet=True)
        want = vwidgets.figure_png(fresh.figure(**dash.values()), dash.dpi)
        assert shown[-1] == want, f"after {name}={value}: the redrawn PNG differs from a new figure's"
    # lowering E to 3 also lowers top-k (4 -> 3): one more redraw
    assert len(shown) == dash.renders > len(moves)
    assert all(fig is shown_figs[0] for fig in shown_figs)  # one figure, redrawn
    assert len(shown_figs[0].axes) == 4
    assert plt.get_fignums() == open_before  # nothing left open for the inline backend to show again
    # the kept figure's artists are the routing numbers of the current values
    run = dash.run(**dash.values())
    load_ax, heat_ax = shown_figs[0].axes[:2]
    kept = [p.get_height() for p in load_ax.containers[0].patches]
    np.testing.assert_array_equal(kept, run.routing.kept())
    np.testing.assert_allclose(heat_ax.images[0].get_array(), run.routing.probs[:48].T)
    assert len(heat_ax.images) == 1 and len(load_ax.containers) == 2  # old artists are gone


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
    dash = dashboards.ModelDashboard(tiny_lm, counts)
    text = "hello 天地"
    fig = dash.figure(text=text, layer=0, expert=-1)
    text_ax, load_ax, dom_ax = fig.axes
    r = routes.route_text_batched(tiny_lm, text)
    first = viz.char_experts(text, r.top1()[0])
    colors = viz.expert_colors(4)
    tiles = [p for p in text_ax.patches if p.get_width() == 1]
    for tile, e in zip(tiles, first, strict=True):
        np.testing.assert_allclose(tile.get_facecolor()[:3], colors[e][:3])
    shares = [np.array([p.get_height() for p in c.patches]) for c in load_ax.containers]
    loads = np.stack([np.bincount(r.indices[li].reshape(-1), minlength=4) for li in range(2)])
    np.testing.assert_allclose(np.stack(shares, 1), loads / loads.sum(1, keepdims=True))
    np.testing.assert_allclose(dom_ax.images[0].get_array(), counts[0] / counts[0].sum(1, keepdims=True))
    # an empty text box is a message, not an error
    fig = dash.figure(text="", layer=1, expert=2)
    assert "type some text" in fig.axes[0].texts[0].get_text()


def test_model_dashboard_controls_never_raise(tiny_lm, corpus):
    dash = dashboards.ModelDashboard(tiny_lm, routes.domain_expert_counts(tiny_lm, corpus, windows_per_domain=1))
    assert dash.step_through() >= len(dashboards.SAMPLE_TEXTS) + len(dashboards.EDGE_TEXTS)
    dash.sample.value = "Chinese"
    assert dash.controls["text"].value == dashboards.SAMPLE_TEXTS["Chinese"]
    assert dash.controls["expert"].options[-1] == ("expert 3", 3)
    with pytest.raises(ValueError, match=r"domain_counts must have shape \(layers, domains, experts\)"):
        dashboards.ModelDashboard(tiny_lm, np.zeros((1, 4, 4)))
