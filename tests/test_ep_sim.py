"""The expert-parallel simulator: placement, routing shares, all-to-all volume (closed forms and a
brute-force count), nodes a token reaches (with and without group-limited routing), load imbalance, the
published figures it recomputes, figures (no legend on a bar) and the dashboard (every control stepped)."""

import itertools
import json
import os
import re
from math import comb

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from mindspore import Tensor

import moe_lab
from moe_lab.budget import count_parameters, load_model
from moe_lab.core.anatomy import cross_node_bytes, group_span
from moe_lab.parallel import sim as ep_sim
from moe_lab.parallel.layer import FUSED_CONSTRAINTS, ranks_reached, ring_bytes
from moe_lab.parallel.sim import (
    a2a_volume,
    cap_shares,
    device_loads,
    device_shares,
    expected_nodes_reached,
    expert_bytes_per_device,
    expert_params,
    imbalance,
    network_copies,
    nodes_reached,
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


def test_non_expert_parameters_do_not_fit_next_to_the_experts_when_replicated():
    """Notebook 06's statement: on 32 NPUs the ~18.5B non-expert parameters (bf16) copied on every NPU do not
    fit next to the 43.8 GB of routed experts in 64 GB; split over the 32 NPUs (tensor parallelism) they do."""
    count = count_parameters(load_model("openpangu-ultra-moe-718b"))
    non_expert = count.total - count.components["routed_experts"]
    assert non_expert / 1e9 == pytest.approx(PANGU["non_expert_params_billions"], abs=0.005)
    assert count.components["routed_experts"] / 1e9 == pytest.approx(
        PANGU["routed_expert_params_all_layers_billions"], abs=0.05)
    npus = FACTS["deployments"]["pangu_reference_inference"]["npus"]
    hbm = FACTS["atlas_800t_a2"]["hbm_gb_per_npu"] * 1e9
    held = expert_bytes_per_device(256, npus, PANGU["hidden_size"], PANGU["moe_intermediate_size"], PANGU["moe_layers"])
    assert non_expert * 2 / 1e9 == pytest.approx(36.96, abs=0.01)
    assert held + non_expert * 2 > hbm  # replicated: 80.7 GB per NPU
    assert held + non_expert * 2 / npus < hbm  # split over the 32 NPUs: the weights fit
    vllm = FACTS["deployments"]["vllm_pr_27521"]
    assert vllm["tp"] == vllm["ep"] == vllm["world_size"] == npus


def test_fused_constraints_match_the_facts_file():
    facts = FACTS["moe_distribute_dispatch"]
    for soc, limits in FUSED_CONSTRAINTS.items():
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in limits.items()} == facts[soc]
    assert PANGU["hidden_size"] > facts["ascend910b"]["max_hidden"]  # why notebook 06 says "not on A2 with 2.10"


def test_simulate_defaults_are_the_718b_on_4_nodes():
    sim = simulate()
    v = sim.volume
    assert (v.ep, v.nodes, v.top_k, v.hidden_size) == (32, 4, 8, 7680)
    assert v.inter_fraction == pytest.approx(24 / 31)
    assert sim.expected_imbalance == pytest.approx(1.0)
    assert 1.0 <= sim.sampled_imbalance < 1.05  # 1M slots: sampling noise is small
    assert "inter-node" in ep_sim.summary_line(sim)


# ---------------------------------------------------------------------------------------------
# Nodes a token reaches


def test_ranks_and_nodes_reached_brute_force():
    rng = np.random.default_rng(4)
    indices = np.stack([rng.choice(32, 5, replace=False) for _ in range(50)])
    for parts in (1, 2, 4, 8, 32):
        want = [len({e // (32 // parts) for e in row}) for row in indices]
        assert ranks_reached(indices, 32, parts).tolist() == want
        assert nodes_reached(indices, 32, parts).tolist() == want
    assert ranks_reached(Tensor(indices.astype(np.int32)), 32, 4).tolist() == ranks_reached(indices, 32, 4).tolist()
    with pytest.raises(ValueError, match="world_size must divide num_experts=32"):
        ranks_reached(indices, 32, 3)
    with pytest.raises(ValueError, match="indices must be expert ids in \\[0, 16\\)"):
        ranks_reached(indices, 16, 4)
    with pytest.raises(ValueError, match="indices must have shape \\(tokens, top_k\\)"):
        ranks_reached(indices.reshape(-1), 32, 4)


def test_expected_nodes_reached_closed_form():
    assert expected_nodes_reached(256, 8, 1) == 1.0
    assert expected_nodes_reached(256, 1, 8) == pytest.approx(1.0)
    assert expected_nodes_reached(8, 8, 4) == pytest.approx(4.0)  # every expert chosen: every node reached
    assert expected_nodes_reached(8, 2, 4) == pytest.approx(4 * (1 - comb(6, 2) / comb(8, 2)))
    rng = np.random.default_rng(0)  # Monte Carlo: K distinct experts drawn uniformly
    draws = np.stack([rng.choice(256, 8, replace=False) for _ in range(20000)])
    assert nodes_reached(draws, 256, 8).mean() == pytest.approx(expected_nodes_reached(256, 8, 8), abs=0.02)
    with pytest.raises(ValueError, match="nodes must divide num_experts=256; got nodes=6"):
        expected_nodes_reached(256, 8, 6)
    with pytest.raises(ValueError, match="top_k must be <= 16"):
        expected_nodes_reached(16, 17, 2)


def test_network_copies_brute_force():
    rng = np.random.default_rng(7)
    indices = np.stack([rng.choice(64, 6, replace=False) for _ in range(40)])
    src = rng.integers(0, 8, 40)
    per_expert = network_copies(indices, 64, 8, src, per_node=False)
    per_node = network_copies(indices, 64, 8, src)
    for t in range(40):
        nodes = [e // 8 for e in indices[t]]
        assert per_expert[t] == sum(n != src[t] for n in nodes)
        assert per_node[t] == len(set(nodes) - {src[t]})
    assert (per_node <= per_expert).all()
    with pytest.raises(ValueError, match="source_nodes must be 40 node numbers in \\[0, 8\\)"):
        network_copies(indices, 64, 8, src[:5])
    with pytest.raises(ValueError, match="source_nodes must be 40 node numbers"):
        network_copies(indices, 64, 8, src + 8)
    with pytest.raises(TypeError, match="per_node must be True or False"):
        network_copies(indices, 64, 8, src, per_node=1)


def test_network_copies_agree_with_notebook_02s_count():
    """Notebook 02 counts the bytes a token sends to other nodes (``moe_lab.core.anatomy``); with the same home
    nodes that is ``network_copies`` (one copy per node) times one bf16 row, and its span is ``nodes_reached``."""
    rng = np.random.default_rng(2)
    indices = np.stack([rng.choice(256, 8, replace=False) for _ in range(300)])
    homes = np.random.default_rng(0).integers(0, 8, 300)  # the homes cross_node_bytes draws with seed 0
    expected = network_copies(indices, 256, 8, homes) * row_bytes(7168, "bfloat16")
    np.testing.assert_array_equal(cross_node_bytes(indices, 256, 8, hidden_size=7168, seed=0), expected)
    np.testing.assert_array_equal(group_span(indices, 256, 8), nodes_reached(indices, 256, 8))


def test_group_limited_router_bounds_the_nodes_of_a_token():
    """DeepSeek-V3's router (sigmoid, noaux_tc, 8 groups, 4 per token) on 8 nodes: a token's experts are on at
    most 4 nodes, so a dispatch with one copy per node sends at most 4 copies over the network, against up to 7
    without the limit; the plain all-to-all (one row per expert) sends the same on average either way."""
    v3 = FACTS["deepseek_v3"]
    e, k, nodes = v3["n_routed_experts"], v3["num_experts_per_tok"], v3["training_ep_nodes"]
    x = Tensor(np.random.default_rng(0).standard_normal((2048, 32)).astype(np.float32))
    free = moe_lab.SigmoidRouter(32, e, k, seed=1)(x).indices.asnumpy()
    limited = moe_lab.SigmoidRouter(32, e, k, topk_method="noaux_tc", n_group=v3["n_group"],
                                    topk_group=v3["topk_group"], seed=1)(x).indices.asnumpy()
    assert nodes_reached(limited, e, nodes).max() == v3["topk_group"] == v3["max_nodes_per_token"]
    assert nodes_reached(free, e, nodes).max() > v3["topk_group"]
    assert nodes_reached(free, e, nodes).mean() == pytest.approx(expected_nodes_reached(e, k, nodes), abs=0.1)
    src = np.arange(2048) % nodes
    assert network_copies(limited, e, nodes, src).max() <= v3["topk_group"]
    assert network_copies(free, e, nodes, src).max() == nodes - 1
    for idx in (free, limited):
        assert network_copies(idx, e, nodes, src, per_node=False).mean() == pytest.approx(k * 7 / 8, abs=0.1)


# ---------------------------------------------------------------------------------------------
# Figures and the dashboard


def legend_overlaps(fig) -> list[str]:
    """Every (legend, bar) pair whose boxes overlap on the drawn figure, and legends cut by the figure's edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    problems = []
    for leg, (i, ax) in itertools.product(legends, enumerate(fig.axes)):
        box = leg.get_window_extent(renderer)
        for patch in ax.patches:
            if box.overlaps(patch.get_window_extent(renderer)):
                problems.append(f"legend {[t.get_text() for t in leg.get_texts()]} covers a bar of axes {i}")
    for leg in legends:
        box = leg.get_window_extent(renderer)
        if not (box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1):
            problems.append(f"legend {[t.get_text() for t in leg.get_texts()]} is cut by the figure's edge")
    return problems


def test_legend_check_catches_a_legend_on_the_bars():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([0, 1, 2], [5, 5, 5], label="bars")
    ax.legend(loc="lower right")
    assert legend_overlaps(fig)
    plt.close(fig)


def test_no_legend_covers_a_bar():
    result = {"strategies": {s: {"ranks": [{"rank": r, "rows": 41 - 18 * r, "bytes_sent": 6400 * (r + 1)}
                                           for r in range(4)]} for s in ("allgather", "alltoall")}}
    figures = {"volume": ep_viz.fig_volume_vs_ep((8, 16, 32, 64, 128, 256), 4096, 7680, 8),
               "run": ep_viz.fig_run(result),
               "loads": ep_viz.fig_device_loads([30, 50, 40, 45])}
    for name, fig in figures.items():
        assert legend_overlaps(fig) == [], name
    plt.close("all")


def test_dashboard_figure_has_no_legend_on_a_bar_at_any_setting():
    dash = ep_viz.EPDashboard(quiet=True)
    checked = 0
    for name in dash.controls:
        for value in dash.control_values(name):
            fig = dash.figure(**{name: value})
            assert legend_overlaps(fig) == [], (name, value)
            plt.close(fig)
            checked += 1
    assert checked >= 25


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
    """Every control of the dashboard through its whole range, from the kernel side: a callback that fails
    at some value fails here, not in front of a learner."""
    dash = ep_viz.EPDashboard(quiet=True)
    start = dash.values()
    draws = dash.step_through()
    assert dash.values() == start
    values = sum(len(dash.control_values(name)) for name in dash.controls)
    assert draws >= values - len(dash.controls)  # a control set to its current value does not redraw
    assert draws >= 20
    bundle = dash._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle
    plt.close("all")


def test_displayed_dashboard_steps_too():
    """The dashboard the notebook displays (not quiet): stepping it draws every figure and leaves it as it was."""
    dash = ep_viz.EPDashboard(hidden_size=PANGU["hidden_size"], moe_layers=PANGU["moe_layers"])
    start, before = dash.values(), dash.renders
    assert dash.step_through(max_values=3) >= len(dash.controls)
    assert dash.values() == start and dash.renders > before
    assert dash.simulate().volume.hidden_size == PANGU["hidden_size"]
    plt.close("all")


HAN = re.compile(r"[\u4e00-\u9fff]")


def test_figures_speak_chinese_and_keep_their_legends_off_the_bars(zh_plots):
    result = {"strategies": {s: {"ranks": [{"rank": r, "rows": 41 - 18 * r, "bytes_sent": 6400 * (r + 1)}
                                           for r in range(4)]} for s in ("allgather", "alltoall")}}
    figures = {"volume": ep_viz.fig_volume_vs_ep((8, 16, 32, 64, 128, 256), 4096, 7680, 8),
               "run": ep_viz.fig_run(result), "loads": ep_viz.fig_device_loads([30, 50, 40, 45]),
               "sim": ep_viz.fig_sim(simulate(ep=16, routing="zipf", skew=1.0))}
    for name, fig in figures.items():
        assert legend_overlaps(fig) == [], name
        for ax in fig.axes:
            assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) if t), name
            legend = ax.get_legend()
            labels = [t.get_text() for t in legend.get_texts()] if legend else []
            assert all(HAN.search(t) for t in labels if t not in ("allgather", "alltoall")), (name, labels)
    ticks = [t.get_text() for t in figures["volume"].axes[0].get_xticklabels()]
    assert ticks[0].startswith("EP 8\n") and HAN.search(ticks[0])  # "EP 8", then its nodes in Chinese
    assert "1.25" in ep_viz.fig_device_loads([3, 5, 4]).axes[0].get_title()
    plt.close("all")


def test_dashboard_speaks_chinese_at_every_setting(zh_plots):
    dash = ep_viz.EPDashboard(quiet=True)
    for name, control in dash.controls.items():
        if name not in ("top_k", "hidden_size"):  # config words, the same in Chinese
            assert HAN.search(control.description), name
    for name in ("routing", "scheme"):  # Chinese labels, the simulator's values
        options = dash.controls[name].options
        assert all(HAN.search(label) for label, _value in options), name
    assert [v for _label, v in dash.controls["scheme"].options] == list(ep_sim.PLACEMENTS)
    assert dash.control_values("routing") == ["uniform", "zipf"]
    for name in dash.controls:
        for value in dash.control_values(name, max_values=3):
            fig = dash.figure(**{name: value})
            assert legend_overlaps(fig) == [], (name, value)
            assert HAN.search(fig.axes[0].get_title()) and HAN.search(fig.axes[1].get_title())
            plt.close(fig)
