"""The expert-parallel simulator: placement, routing shares, all-to-all volume (closed forms and a
brute-force count), load imbalance, the published figures it recomputes, figures and the dashboard."""

import json
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from moe_lab.parallel import sim as ep_sim
from moe_lab.parallel.layer import FUSED_CONSTRAINTS, ring_bytes
from moe_lab.parallel.sim import (
    a2a_volume,
    cap_shares,
    device_loads,
    device_shares,
    expert_bytes_per_device,
    expert_params,
    imbalance,
    placement,
    routing_shares,
    row_bytes,
    simulate,
    step_volume,
)
from moe_lab.viz import ep as ep_viz

matplotlib.use("Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "data", "ep", "ep_facts.json"), encoding="utf-8") as fh:
    FACTS = json.load(fh)
PANGU = FACTS["openpangu_ultra_moe_718b"]


def test_every_fact_names_a_known_source():
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("source") and key != "sources":
                    name = value.split(" ")[0]
                    assert name in FACTS["sources"] or name == "recount", (key, value)
                walk(value)

    walk({k: v for k, v in FACTS.items() if k != "sources"})
    for source in FACTS["sources"].values():
        assert source["url"] and source["what"] and source["kind"]


def test_placement():
    assert placement(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert placement(8, 4, "round_robin").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert np.bincount(placement(256, 32)).tolist() == [8] * 32
    with pytest.raises(ValueError, match="ep must divide num_experts=256; got ep=24"):
        placement(256, 24)
    with pytest.raises(ValueError, match="scheme must be one of 'contiguous', 'round_robin'"):
        placement(8, 2, "random")


def test_routing_shares():
    np.testing.assert_allclose(routing_shares("uniform", 256, 8), 1 / 256)
    np.testing.assert_allclose(routing_shares("zipf", 16, 2, skew=0.0), 1 / 16)
    q = routing_shares("zipf", 256, 8, skew=1.0, seed=None)
    assert q.sum() == pytest.approx(1.0)
    assert q.max() <= 1 / 8 + 1e-12  # an expert gets at most one slot per token
    assert q[0] == pytest.approx(1 / 8) and np.all(np.diff(q[1:]) <= 1e-15)  # seed=None: expert 0 hottest
    shuffled = routing_shares("zipf", 256, 8, skew=1.0, seed=0)
    np.testing.assert_allclose(np.sort(shuffled), np.sort(q))
    np.testing.assert_allclose(routing_shares("measured", 4, 1, counts=[1, 1, 2, 4]), [1 / 8, 1 / 8, 1 / 4, 1 / 2])
    with pytest.raises(ValueError, match="counts must be 4 non-negative numbers"):
        routing_shares("measured", 4, 1, counts=[1, 2])
    with pytest.raises(ValueError, match="needs counts"):
        routing_shares("measured", 4, 1)


def test_cap_shares_water_filling():
    q = cap_shares(np.array([10.0, 1, 1, 1, 1]), top_k=2)
    assert q.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(q, [0.5, 0.125, 0.125, 0.125, 0.125])
    np.testing.assert_allclose(cap_shares(np.array([5.0, 1, 0]), top_k=3), [1 / 3, 1 / 3, 1 / 3])


def test_uniform_volume_closed_form():
    """Uniform routing: a slot stays home with probability 1/ep, stays in the node with (8-1)/ep."""
    tokens, hidden, k = 4096, 7680, 8
    for ep in (8, 16, 32, 64, 256):
        v = a2a_volume(tokens, hidden, k, ep)
        total = tokens * k * hidden * 2
        assert v.dispatch["local"] == pytest.approx(total / ep)
        assert v.dispatch["intra"] == pytest.approx(total * 7 / ep)
        assert v.dispatch["inter"] == pytest.approx(total * (ep - 8) / ep)
        assert v.sent == pytest.approx(2 * total * (ep - 1) / ep)
        assert v.sent == pytest.approx(2 * ring_bytes("all_to_all", total, ep), abs=2)  # = an AlltoAll
    assert a2a_volume(tokens, hidden, k, 8).inter_fraction == 0.0  # one node: nothing leaves it


def test_volume_matches_brute_force_count():
    """Skewed routing, round-robin placement: compare with an explicit source x destination count."""
    tokens, hidden, k, ep, dpn = 64, 32, 4, 16, 4
    q = routing_shares("zipf", 64, k, skew=1.0, seed=1)
    v = a2a_volume(tokens, hidden, k, ep, num_experts=64, shares=q, scheme="round_robin", devices_per_node=dpn,
                   dispatch_dtype="int8", combine_dtype="bfloat16")
    dev = np.zeros(ep)
    for e, d in enumerate(placement(64, ep, "round_robin")):
        dev[d] += q[e]
    local = intra = inter = 0.0
    recv = np.zeros(ep)
    for s in range(ep):
        for d in range(ep):
            rows = tokens * k * dev[d]
            if d == s:
                local += rows
            elif d // dpn == s // dpn:
                intra += rows
            else:
                inter += rows
            if d != s:
                recv[d] += rows
    per_row = hidden * 1 + 4  # int8 values + a float32 scale
    assert v.dispatch["local"] == pytest.approx(local / ep * per_row)
    assert v.dispatch["intra"] == pytest.approx(intra / ep * per_row)
    assert v.dispatch["inter"] == pytest.approx(inter / ep * per_row)
    assert v.combine["inter"] == pytest.approx(inter / ep * hidden * 2)
    np.testing.assert_allclose(v.received, recv * per_row)


def test_step_volume_and_row_bytes():
    v = a2a_volume(1024, 7680, 8, 32)
    assert step_volume(v, 58, training=True) == pytest.approx(v.sent * 58 * 2)
    assert step_volume(v, 58, training=False) == pytest.approx(v.sent * 58)
    assert row_bytes(7680, "bfloat16") == 15360 and row_bytes(7680, "int8") == 7684
    with pytest.raises(ValueError, match="dtype must be one of"):
        row_bytes(8, "fp8")


def test_sample_expert_counts():
    q = routing_shares("zipf", 16, 2, skew=1.0, seed=0)
    a = ep_sim.sample_expert_counts(q, 10_000, seed=3)
    assert a.sum() == 10_000 and a.shape == (16,)
    assert a.tolist() == ep_sim.sample_expert_counts(q, 10_000, seed=3).tolist()  # seeded
    np.testing.assert_allclose(a / 10_000, q, atol=0.02)


def test_loads_and_imbalance():
    assert imbalance([1, 1, 1, 1]) == 1.0
    assert imbalance([4, 0, 0, 0]) == 4.0
    counts = np.array([5, 3, 0, 8, 1, 1, 2, 4])
    assert device_loads(counts, placement(8, 2), 2).tolist() == [16, 8]
    assert device_loads(counts, placement(8, 4, "round_robin"), 4).tolist() == [6, 4, 2, 12]
    # the worst case the notebook shows: hot experts side by side on one device
    q = routing_shares("zipf", 256, 8, skew=1.0, seed=None)
    worst = imbalance(device_shares(q, placement(256, 32), 32))
    spread = imbalance(device_shares(q, placement(256, 32, "round_robin"), 32))
    assert worst > 3 * spread > 3


def test_published_expert_figures_are_recomputed():
    per_layer = expert_params(PANGU["hidden_size"], PANGU["moe_intermediate_size"])
    assert per_layer / 1e6 == pytest.approx(PANGU["routed_expert_params_per_layer_millions"], abs=0.005)
    all_layers = per_layer * PANGU["n_routed_experts"] * PANGU["moe_layers"]
    assert all_layers / 1e9 == pytest.approx(PANGU["routed_expert_params_all_layers_billions"], abs=0.05)
    assert PANGU["moe_layers"] == PANGU["num_hidden_layers"] - PANGU["first_k_dense_replace"]
    # on the README's 32 NPUs (4 x 8 Atlas 800T A2, 64 GB each) the routed experts take 8 per NPU, ~44 GB
    a2 = FACTS["atlas_800t_a2"]
    npus = FACTS["deployments"]["pangu_reference_inference"]["npus"]
    held = expert_bytes_per_device(256, npus, PANGU["hidden_size"], PANGU["moe_intermediate_size"], PANGU["moe_layers"])
    assert held / 1e9 == pytest.approx(43.79, abs=0.01)
    assert held < a2["hbm_gb_per_npu"] * 1e9
    assert npus == FACTS["deployments"]["pangu_reference_inference"]["nodes"] * a2["npus_per_node"]


def test_fused_constraints_match_the_facts_file():
    facts = FACTS["moe_distribute_dispatch"]
    for soc, limits in FUSED_CONSTRAINTS.items():
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in limits.items()} == facts[soc]
    assert PANGU["hidden_size"] > facts["ascend910b"]["max_hidden"]  # why notebook 05 says "not on A2 with 2.10"


def test_simulate_defaults_are_the_718b_on_4_nodes():
    sim = simulate()
    v = sim.volume
    assert (v.ep, v.nodes, v.top_k, v.hidden_size) == (32, 4, 8, 7680)
    assert v.inter_fraction == pytest.approx(24 / 31)
    assert sim.expected_imbalance == pytest.approx(1.0)
    assert 1.0 <= sim.sampled_imbalance < 1.05  # 1M slots: sampling noise is small
    assert "inter-node" in ep_sim.summary_line(sim)


def test_figures():
    fig = ep_viz.fig_volume_vs_ep((8, 16, 32), 1024, 7680, 8)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 6
    fig = ep_viz.fig_device_loads([3, 5, 4], "x")
    assert "max/mean = 1.25" in fig.axes[0].get_title()
    fig = ep_viz.fig_sim(simulate(ep=16, routing="zipf", skew=1.0))
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 16
    result = {"strategies": {s: {"ranks": [{"rank": r, "rows": 10 + r, "bytes_sent": 1024 * (r + 1)} for r in range(2)]}
                             for s in ("allgather", "alltoall")}}
    fig = ep_viz.fig_run(result)
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 4
    plt.close("all")


def test_dashboard_steps_every_control_and_has_png_fallback():
    dash = ep_viz.EPDashboard(quiet=True)
    start = dash.values()
    draws = dash.step_through()
    assert dash.values() == start
    assert draws >= sum(len(c.options) if hasattr(c, "options") else 5 for c in dash.controls.values()) - 8
    bundle = dash._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle
    plt.close("all")
