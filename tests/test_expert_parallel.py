"""Expert parallelism: the EP layer equals the single-process MoELayer (real msrun jobs: 2 ranks with a
softmax router, 4 ranks with openPangu's block made group-limited: sigmoid router, scaled weights, a shared
expert, 4 groups of which a token uses 2), its byte accounting follows the ring formulas (the replicated
shared expert adds no byte), and the strategy choice follows the backend."""

import numpy as np
import pytest
from mindspore import Tensor

import moe_lab
from moe_lab.ascend.backend import Backend
from moe_lab.core.reference import expert_numpy, layer_forward_numpy
from moe_lab.parallel.cli import block_description, expert_span, format_table, job_processes, run_ep
from moe_lab.parallel.layer import (
    Communicator,
    ExpertParallelMoE,
    choose_strategy,
    expert_range,
    fused_dispatch_violations,
    pack_plan,
    ranks_reached,
    ring_bytes,
)
from moe_lab.parallel.sim import strategy_bytes
from moe_lab.parallel.worker import WorkerConfig, build_layer, make_tokens
from moe_lab.textfmt import plural

CFG = dict(tokens_per_rank=12, hidden_size=16, intermediate_size=24, num_experts=8, top_k=2, seed=3)
# openPangu-Ultra-MoE's block at toy size (sigmoid scores, weights x 2.5, one shared expert), made group-limited
# like DeepSeek-V3 with one group per rank on 4 ranks: a token's 3 experts on at most 2 ranks
BLOCK = dict(CFG, top_k=3, scoring_func="sigmoid", routed_scaling_factor=2.5, n_shared_experts=1, n_group=4,
             topk_group=2)
JOBS = {2: CFG, 4: BLOCK}  # one real msrun job per world size
JOB_TIMEOUT = 240.0  # seconds; a loaded 2-core machine starts 5 MindSpore processes in ~30 s


def make_layer(cfg):
    """The one-process layer, built here from MoELayer's own arguments (not with the worker's build_layer)."""
    return moe_lab.MoELayer(cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"], cfg["top_k"],
                            scoring_func=cfg.get("scoring_func", "softmax"),
                            routed_scaling_factor=cfg.get("routed_scaling_factor", 1.0),
                            n_group=cfg.get("n_group", 1), topk_group=cfg.get("topk_group", 1),
                            n_shared_experts=cfg.get("n_shared_experts", 0), seed=cfg["seed"])


def single_process(world_size, cfg=CFG):
    layer = make_layer(cfg)
    x = make_tokens(cfg["tokens_per_rank"] * world_size, cfg["hidden_size"], cfg["seed"])
    return layer, x, layer(Tensor(x)).asnumpy()


# ---------------------------------------------------------------------------------------------
# In one process


def test_expert_range_blocks_and_errors():
    assert [expert_range(8, 4, r) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert expert_range(256, 32, 31) == (248, 256)
    with pytest.raises(ValueError, match="world_size must divide num_experts=8.*world_size=3"):
        expert_range(8, 3, 0)
    with pytest.raises(ValueError, match="rank must be <= 1"):
        expert_range(8, 2, 2)


def test_ring_bytes_formulas():
    assert ring_bytes("all_gather", 100, 4) == 300
    assert ring_bytes("all_reduce", 100, 4) == 150
    assert ring_bytes("all_to_all", 100, 4) == 75
    assert ring_bytes("all_reduce", 100, 1) == 0
    with pytest.raises(ValueError, match="op must be one of"):
        ring_bytes("reduce_scatter", 100, 2)


@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
@pytest.mark.parametrize("cfg", [CFG, BLOCK], ids=["softmax", "openpangu-block-group-limited"])
def test_one_rank_equals_layer_and_numpy_reference(strategy, cfg):
    layer, x, expected = single_process(1, cfg)
    ep = ExpertParallelMoE(layer, Communicator(0, 1))
    out, stats = ep(Tensor(x), strategy)
    np.testing.assert_allclose(out.asnumpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out.asnumpy(), layer_forward_numpy(layer, x), atol=1e-4)
    assert stats.expert_load == layer.route(Tensor(x)).load().tolist()
    assert stats.bytes_sent == 0 and stats.bytes_received == 0  # one rank talks to nobody
    assert stats.ranks_reached == [len(x)]  # one rank: every token's experts are on it


def test_the_block_config_exercises_every_part():
    """BLOCK would not test the whole block if a part changed nothing: each one changes the output."""
    layer, x, full = single_process(1, BLOCK)
    assert layer.router.scoring_func == "sigmoid" and layer.router.group_limited
    assert layer.shared_experts is not None and layer.router.routed_scaling_factor == 2.5
    for change in (dict(n_shared_experts=0), dict(routed_scaling_factor=1.0), dict(n_group=1, topk_group=1),
                   dict(scoring_func="softmax")):
        assert np.abs(single_process(1, dict(BLOCK, **change))[2] - full).max() > 1e-3, change
    # the group limit matters for the layout of 4 ranks: without it some token's experts are on 3 ranks
    free = make_layer(dict(BLOCK, n_group=1, topk_group=1)).route(Tensor(make_tokens(48, 16, 3))).indices
    assert ranks_reached(free, 8, 4).max() == 3


def test_worker_builds_the_same_layer():
    for cfg in (CFG, BLOCK):
        fields = {k: v for k, v in cfg.items() if k in WorkerConfig.__dataclass_fields__}
        ours, theirs = make_layer(cfg), build_layer(WorkerConfig(**fields))
        x = Tensor(make_tokens(24, cfg["hidden_size"], 1))
        np.testing.assert_array_equal(ours(x).asnumpy(), theirs(x).asnumpy())
        assert str(ours.router) == str(theirs.router)


def test_capacity_is_refused():
    layer = moe_lab.MoELayer(8, 8, 4, 2, capacity_factor=1.0)
    with pytest.raises(ValueError, match="capacity_factor must be None, got 1.0"):
        ExpertParallelMoE(layer, Communicator(0, 1))


def test_alltoall_layout_with_simulated_ranks():
    """The AlltoAll strategy's packing, simulated for 4 ranks in NumPy (transport = block transpose),
    gives the NumPy reference output: the same plan the msrun job uses, without a launcher."""
    world, n, hidden, ffn, experts, top_k = 4, 5, 6, 7, 8, 3
    layer = moe_lab.MoELayer(hidden, ffn, experts, top_k, seed=11)
    x = make_tokens(world * n, hidden, 11)
    w = layer.experts.numpy_weights()
    routing = layer.route(Tensor(x))
    ids, weights = routing.indices.asnumpy(), routing.weights.asnumpy()
    per = experts // world
    plans, sends = [], []
    for r in range(world):
        idx = ids[r * n:(r + 1) * n].reshape(-1)
        dest = idx // per
        plans.append((dest, idx))
    capacity = max(np.bincount(d, minlength=world).max() for d, _ in plans)
    for r, (dest, idx) in enumerate(plans):
        plan = pack_plan(dest, idx - dest * per, world, capacity)
        rows = np.where(plan.slot[:, None] >= 0, x[r * n + np.maximum(plan.slot, 0) // top_k], 0.0)
        sends.append((plan, rows.reshape(world, capacity, hidden), plan.local_id.reshape(world, capacity)))
    results = []  # results[d][s]: what rank d computed for rank s's block
    for d in range(world):
        res = np.zeros((world, capacity, hidden))
        for s in range(world):
            rows, lid = sends[s][1][d], sends[s][2][d]
            for i in np.flatnonzero(lid >= 0):
                e = d * per + lid[i]
                res[s, i] = expert_numpy(rows[i:i + 1], w["w_gate"][e], w["w_up"][e], w["w_down"][e])[0]
        results.append(res)
    out = np.zeros((world * n, hidden))
    for s in range(world):
        plan = sends[s][0]
        back = np.stack([results[d][s] for d in range(world)]).reshape(world * capacity, hidden)
        for p in np.flatnonzero(plan.slot >= 0):
            slot = plan.slot[p]
            t, k = divmod(slot, top_k)
            out[s * n + t] += weights[s * n + t, k] * back[p]
    np.testing.assert_allclose(out, layer_forward_numpy(layer, x), atol=1e-5)


def test_pack_plan_rejects_small_capacity():
    with pytest.raises(ValueError, match="capacity=1 is smaller than the largest block"):
        pack_plan(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 1)


def test_choose_strategy_by_backend():
    cpu = Backend(name="cpu", device="CPU")
    a2 = Backend(name="ascend-fused", device="Ascend", soc="ascend910b", tier="fused")
    a3 = Backend(name="ascend-fused", device="Ascend", soc="ascend910_93", tier="fused")
    duo = Backend(name="ascend-fp16-subset", device="Ascend", soc="ascend310p", tier="fp16-subset")
    small = dict(world_size=2, hidden_size=32, tokens_per_rank=16, top_k=2, num_experts=8)
    assert choose_strategy(cpu, **small).strategy == "allgather"
    assert "no AlltoAll" in choose_strategy(cpu, **small).reason
    ds3 = dict(world_size=32, hidden_size=7168, tokens_per_rank=256, top_k=8, num_experts=256, dtype="bfloat16")
    assert choose_strategy(a2, **ds3).strategy == "fused"
    pangu = dict(ds3, hidden_size=7680)  # openPangu-Ultra-MoE-718B: hidden 7680 > 7168
    choice = choose_strategy(a2, **pangu)
    assert choice.strategy == "alltoall" and "hidden_size=7680" in choice.reason
    assert choose_strategy(a2, **dict(ds3, world_size=8)).strategy == "alltoall"  # A2 needs EP 16/32/64
    assert choose_strategy(a3, **dict(ds3, world_size=8)).strategy == "fused"
    assert choose_strategy(a2, **dict(ds3, dtype="float32")).strategy == "alltoall"
    assert choose_strategy(a2, **dict(ds3, tokens_per_rank=257)).strategy == "alltoall"
    assert choose_strategy(duo, **ds3).strategy == "alltoall"
    assert fused_dispatch_violations("ascend910b", **ds3) == []
    assert len(fused_dispatch_violations("ascend910b", **dict(ds3, top_k=9, hidden_size=7000))) == 2


# ---------------------------------------------------------------------------------------------
# Real msrun jobs (one per world size, shared by the tests below)


@pytest.fixture(scope="module", params=sorted(JOBS), ids=["2ranks-softmax", "4ranks-openpangu-block-grouped"])
def job(request):
    world = request.param
    token = f"test-ep-{world}-{np.random.default_rng().integers(1 << 30)}"
    result = run_ep(world, strategy="all", repeats=1, timeout=JOB_TIMEOUT, job_token=token, **JOBS[world])
    return world, result, token


def test_job_leaves_no_process(job):
    _, _, token = job
    assert job_processes(token) == []


def test_ep_output_equals_single_process(job):
    world, result, _ = job
    layer, x, expected = single_process(world, JOBS[world])
    assert set(result["strategies"]) == {"allgather", "alltoall"}  # both run on CPU
    for name, s in result["strategies"].items():
        np.testing.assert_allclose(np.asarray(s["output"], np.float32), expected, atol=1e-5, err_msg=name)
        assert s["max_abs_error"] < 1e-5
    if JOBS[world].get("n_shared_experts"):  # the shared expert is in the output, applied once per token
        routed_only = make_layer(dict(JOBS[world], n_shared_experts=0))(Tensor(x)).asnumpy()
        shared = layer.shared_experts(Tensor(x)).asnumpy()
        np.testing.assert_allclose(np.asarray(result["strategies"]["allgather"]["output"]) - routed_only, shared,
                                   atol=1e-5)


def test_each_rank_processes_the_rows_routed_to_its_experts(job):
    world, result, _ = job
    cfg = JOBS[world]
    layer, x, _ = single_process(world, cfg)
    load = layer.route(Tensor(x)).load()
    per = cfg["num_experts"] // world
    for s in result["strategies"].values():
        assert s["expert_load"] == load.tolist()
        for row in s["ranks"]:
            r = row["rank"]
            assert row["experts"] == [r * per, (r + 1) * per]
            assert row["rows"] == int(load[r * per:(r + 1) * per].sum())


def test_ranks_reached_match_the_routing_and_the_group_limit(job):
    world, result, _ = job
    cfg = JOBS[world]
    layer, x, _ = single_process(world, cfg)
    reached = ranks_reached(layer.route(Tensor(x)).indices, cfg["num_experts"], world)
    assert result["ranks_reached"] == np.bincount(reached, minlength=world + 1)[1:].tolist()
    assert sum(result["ranks_reached"]) == world * cfg["tokens_per_rank"]
    if cfg.get("n_group", 1) == world:  # one group per rank: a token's experts on at most topk_group ranks
        assert result["ranks_reached"][cfg["topk_group"]:] == [0] * (world - cfg["topk_group"])
    assert "ranks holding each token's experts" in format_table(result, timings=False)


def test_bytes_follow_the_ring_formulas(job):
    """The formulas depend on tokens, hidden size and top-k only: a shared expert adds no byte."""
    world, result, _ = job
    cfg = JOBS[world]
    n, h, k, f32 = cfg["tokens_per_rank"], cfg["hidden_size"], cfg["top_k"], 4
    allgather = (world - 1) * (n * h * f32 + 2 * n * k * f32) + 2 * (world - 1) * (world * n * h * f32) // world
    for row in result["strategies"]["allgather"]["ranks"]:
        assert row["bytes_sent"] == row["bytes_received"] == allgather
        assert [c["op"] for c in row["collectives"]] == ["all_gather"] * 3 + ["all_reduce"]
    # alltoall: blocks of C rows per destination (C = the largest count of the job), emulated by AllGather
    a2a = result["strategies"]["alltoall"]["ranks"]
    total_padded = sum(row["padded_rows"] for row in a2a)
    capacity = (world * n * k + total_padded) // (world * world)
    buffer_rows = world * capacity
    emulated = (world - 1) * (world * 4 + buffer_rows * h * f32 + buffer_rows * 4 + buffer_rows * h * f32)
    ideal = (world - 1) * world * 4 + (world - 1) * (2 * buffer_rows * h * f32 + buffer_rows * 4) // world
    for row in a2a:
        assert row["bytes_sent"] == emulated
        assert row["alltoall_bytes"] == ideal < emulated


def test_table_without_timings_is_deterministic_text(job):
    world, result, _ = job
    text = format_table(result, timings=False)
    assert f"expert parallelism on {world} ranks" in text
    first = result["strategies"]["allgather"]["ranks"][0]
    assert any(line.startswith("   0  ") and line.endswith("  " + " ".join(map(str, first["expert_load"])))
               for line in text.splitlines())
    assert "ms" not in text.replace("msrun", "")  # no time in the text the notebook compares
    assert "forward ms" in format_table(result, timings=True)
    assert result["strategies"]["allgather"]["ranks"][0]["forward_seconds"] > 0


def test_strategy_bytes_formula_matches_the_run(job):
    world, result, _ = job
    cfg = JOBS[world]
    n, h, k = cfg["tokens_per_rank"], cfg["hidden_size"], cfg["top_k"]
    for row in result["strategies"]["allgather"]["ranks"]:
        rows_only = sum(c["sent"] for c in row["collectives"] if c["phase"] in ("dispatch: tokens",
                                                                                   "combine: partial outputs"))
        assert rows_only == strategy_bytes("allgather", n, h, k, world, 4)
    for row in result["strategies"]["alltoall"]["ranks"]:  # padding only adds to the formula's rows
        rows_only = sum(c["alltoall_bytes"] for c in row["collectives"]
                        if c["phase"] in ("dispatch: tokens", "combine: expert outputs"))
        assert rows_only >= strategy_bytes("alltoall", n, h, k, world, 4)


def test_table_words():
    assert [plural(1, "rank"), plural(2, "rank")] == ["1 rank", "2 ranks"]
    assert [expert_span(3, 4), expert_span(4, 8)] == ["3", "4-7"]  # never "3-3"
    config = dict(BLOCK, dtype="float32")
    assert block_description(config) == ("8 experts, top-3, sigmoid router (weights x 2.5), experts in 4 groups, "
                                         "at most 2 groups per token, 1 shared expert")
    assert block_description(dict(CFG, scoring_func="softmax", n_shared_experts=0)) == (
        "8 experts, top-2, softmax router, no shared expert")
