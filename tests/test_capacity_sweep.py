"""``moe_lab.core.capacity_sweep``: drop statistics and error vs capacity factor, and its plot (notebook 03)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mindspore import Tensor  # noqa: E402

import moe_lab  # noqa: E402
from moe_lab.core.capacity_sweep import CapacitySweep, capacity_sweep  # noqa: E402
from moe_lab.core.layer import MoELayer  # noqa: E402
from moe_lab.core.reference import keep_numpy, moe_forward_numpy  # noqa: E402
from moe_lab.viz.figures import plot_capacity_sweep  # noqa: E402

moe_lab.setup(seed=0)


@pytest.fixture(scope="module")
def sweep_case():
    layer = MoELayer(16, 32, 4, 2, seed=3)
    x = Tensor(np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    factors = [0.25, 0.5, 1.0, 1.5, 2.0]
    return layer, x, factors, capacity_sweep(layer, x, factors)


def test_sweep_matches_numpy_reference(sweep_case):
    layer, x, factors, sweep = sweep_case
    w = layer.experts.numpy_weights()
    xs = x.asnumpy()
    args = (xs, layer.router.weight.asnumpy(), w["w_gate"], w["w_up"], w["w_down"], 2)
    full = moe_forward_numpy(*args)
    routing = layer.route(x)
    for i, cf in enumerate(factors):
        keep = keep_numpy(routing.indices.asnumpy(), routing.weights.asnumpy(), 4, cf, "position")
        assert sweep.capacity[i] == int(np.ceil(cf * 64 * 2 / 4))
        assert sweep.dropped_slots[i] == pytest.approx((~keep).mean())
        assert sweep.dropped_tokens[i] == pytest.approx((~keep.any(1)).mean())
        y = moe_forward_numpy(*args, capacity_factor=cf)
        want = np.linalg.norm(y - full) / np.linalg.norm(full)
        assert sweep.relative_error[i] == pytest.approx(want, abs=1e-5)


def test_sweep_shape_and_monotone(sweep_case):
    layer, _, factors, sweep = sweep_case
    assert isinstance(sweep, CapacitySweep)
    assert sweep.load.sum() == 128 and sweep.tokens == 64 and sweep.top_k == 2
    assert (np.diff(sweep.dropped_slots) <= 0).all()  # more room, fewer drops
    assert sweep.dropped_slots[0] > 0.5
    # once the capacity reaches the busiest expert's load nothing drops and the output is exact
    fits = sweep.capacity >= sweep.load.max()
    assert fits.any()
    assert (sweep.dropped_slots[fits] == 0).all() and (sweep.relative_error[fits] < 1e-6).all()


def test_priority_sweep_matches_the_oracle(sweep_case):
    """The "priority" policy ranks tokens by their largest routing probability (V-MoE), not by the
    renormalised combine weights: the sweep must drop exactly the slots the NumPy oracle drops."""
    layer, x, factors, position = sweep_case
    sweep = capacity_sweep(layer, x, factors, drop_policy="priority")
    assert sweep.drop_policy == "priority"
    routing = layer.router(x)
    idx, probs = routing.indices.asnumpy(), routing.probs.asnumpy()
    scores = np.take_along_axis(probs, idx, 1)
    w = layer.experts.numpy_weights()
    args = (x.asnumpy(), layer.router.weight.asnumpy(), w["w_gate"], w["w_up"], w["w_down"], 2)
    full = moe_forward_numpy(*args)
    differs = False
    for i, cf in enumerate(factors):
        keep = keep_numpy(idx, scores, 4, cf, "priority")
        differs |= not np.array_equal(keep, keep_numpy(idx, scores, 4, cf, "position"))
        assert sweep.dropped_slots[i] == pytest.approx((~keep).mean())
        assert sweep.dropped_tokens[i] == pytest.approx((~keep.any(1)).mean())
        y = moe_forward_numpy(*args, capacity_factor=cf, drop_policy="priority")
        want = np.linalg.norm(y - full) / np.linalg.norm(full)
        assert sweep.relative_error[i] == pytest.approx(want, abs=1e-5)
    assert differs  # the case tells the two policies apart
    # both policies drop the same number of slots (each full expert keeps exactly C), not the same slots
    np.testing.assert_allclose(sweep.dropped_slots, position.dropped_slots)


@pytest.mark.parametrize("shape", [(0, 16), (2, 0, 16)])
def test_sweep_of_an_empty_batch(sweep_case, shape):
    layer, _, factors, _ = sweep_case
    assert layer(Tensor(np.zeros(shape, np.float32))).shape == shape  # the layer: an empty output
    sweep = capacity_sweep(layer, Tensor(np.zeros(shape, np.float32)), factors, drop_policy="priority")
    assert sweep.tokens == 0 and sweep.top_k == 2
    assert sweep.capacity.tolist() == [0] * len(factors)
    for values in (sweep.dropped_slots, sweep.dropped_tokens, sweep.relative_error):
        assert values.tolist() == [0.0] * len(factors)  # nothing routed, nothing dropped
    assert sweep.load.tolist() == [0, 0, 0, 0]


def test_sweep_bad_input(sweep_case):
    layer, x, _, _ = sweep_case
    with pytest.raises(ValueError, match="drop_policy"):
        capacity_sweep(layer, x, [1.0], drop_policy="random")
    with pytest.raises(ValueError, match="factors"):
        capacity_sweep(layer, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="factors"):
        capacity_sweep(layer, x, [])
    with pytest.raises(TypeError, match="x must be"):
        capacity_sweep(layer, x.asnumpy(), [1.0])
    with pytest.raises(ValueError, match="hidden_size=16"):
        capacity_sweep(layer, x[:, :8], [1.0])
    with pytest.raises(ValueError, match="shape"):
        capacity_sweep(layer, x.reshape(-1), [1.0])


def points_under_legend(ax) -> int:
    """How many plotted data points (markers of the curves) fall inside the legend's box, in pixels."""
    fig = ax.figure
    fig.canvas.draw()
    box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    inside = 0
    for line in ax.lines:
        if line.get_marker() in (None, "None", ""):
            continue  # the reference lines (dotted "fits" line) carry no data points
        xy = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
        inside += int(sum(box.contains(px, py) for px, py in xy))
    return inside


def test_plot_capacity_sweep(sweep_case):
    *_, sweep = sweep_case
    fig = plot_capacity_sweep(sweep)
    left, right = fig.axes
    assert len(left.lines) == 3 and len(right.lines) == 2  # two curves + the "fits" line; one curve + line
    np.testing.assert_allclose(left.lines[0].get_ydata(), 100 * sweep.dropped_slots)
    np.testing.assert_allclose(right.lines[0].get_ydata(), 100 * sweep.relative_error)
    fits_at = left.lines[2].get_xdata()[0]
    assert fits_at == pytest.approx(sweep.load.max() * 4 / 128)
    assert points_under_legend(left) == 0  # the legend hides no measured point
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    assert plot_capacity_sweep(sweep, ax=axes) is fig
    plt.close(fig)
    with pytest.raises(TypeError, match="CapacitySweep"):
        plot_capacity_sweep({"factors": [1.0]})
