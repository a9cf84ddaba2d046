"""Expert parallelism (EP): each of ``world_size`` ranks owns ``num_experts / world_size`` experts.

Introduced in notebook 06. Every rank holds its own tokens and a copy of the router and of the shared
experts (replicated: they see only this rank's tokens, so they need no communication); the routed
experts are sharded: rank ``r`` owns the contiguous block
``[r * E / W, (r + 1) * E / W)`` of the stacked expert weights (the layout of MindFormers and
Megatron). Tokens travel to the rank that owns their expert and the results travel back.

Three ways to move them (``STRATEGIES``), chosen by ``choose_strategy`` from the detected backend:

* ``"allgather"``: dispatch = AllGather of every rank's tokens, expert ids and combine weights; each
  rank runs its experts on the rows routed to them and writes zeros elsewhere; combine = AllReduce(sum)
  of these partial outputs; each rank keeps its own rows. Only AllGather and AllReduce are needed, the
  two collectives MindSpore's CPU backend (MCCL) has (measured with MindSpore 2.10; notebook 06), so
  this is what runs on a laptop. MindFormers' ``ExpertParallelMoE`` has the same variant.
* ``"alltoall"``: each rank sends only the rows its peers need. The per-destination counts are
  exchanged first (AllGather of ``W`` ints), every rank packs its rows per destination rank (padded to
  the largest count, so the shape is static), an AlltoAll delivers them to the expert owners, the
  experts run, a second AlltoAll brings the results home, and the source rank applies the combine
  weights. On Ascend the AlltoAll is HCCL's; on CPU (no AlltoAll there) it is emulated by an AllGather
  from which each rank keeps the blocks addressed to it: the same result, ``W`` times the bytes.
* ``"fused"``: ``MoeDistributeDispatch`` / ``MoeDistributeCombine`` (Atlas A2/A3 only), one fused
  kernel per direction; only inside the operator's constraints (``fused_dispatch_violations``).

Bytes are counted from the tensors each collective is given (``ring_bytes``): shape x dtype size,
times the per-rank factor of the ring algorithm (NCCL-tests ``doc/PERFORMANCE.md``; HCCL implements
the same collectives): AllGather sends and receives ``(W-1) * payload`` per rank, AllReduce
``2 (W-1) / W * payload``, AlltoAll ``(W-1) / W * payload`` (the rank's own block stays home).

Run under msrun (MindSpore's launcher): ``python -m moe_lab ep --world-size 2`` (``moe_lab.parallel.cli``)
starts ``python -m moe_lab.parallel.worker`` on every rank; each rank writes ``rank_<r>.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from mindspore.communication import GlobalComm, get_group_size, get_rank, init

from moe_lab.checks import check_choice, check_int
from moe_lab.core.experts import ffn
from moe_lab.i18n import _

STRATEGIES = ("allgather", "alltoall", "fused")

# MoeDistributeDispatch/Combine constraints, from the MindSpore 2.10 docstring of
# ``mindspore.ops.moe_distribute_dispatch`` (the same table is in data/ep/ep_facts.json with its source).
FUSED_CONSTRAINTS = {
    "ascend910b": {"ep_world_size": (16, 32, 64), "max_hidden": 7168, "hidden_multiple": 32,
                   "max_tokens_per_rank": 256, "max_top_k": 8, "max_experts": 256,
                   "dtypes": ("float16", "bfloat16")},
    "ascend910_93": {"ep_world_size": (8, 16, 32, 64, 128, 144, 256, 288), "hidden_exact": 7168,
                     "max_tokens_per_rank": 512, "max_top_k": 8, "max_experts": 256,
                     "dtypes": ("float16", "bfloat16")},
}


# ---------------------------------------------------------------------------------------------
# Placement and byte accounting (pure Python: used by the simulator and the tests too)


def expert_range(num_experts: int, world_size: int, rank: int) -> tuple[int, int]:
    """The experts ``[first, last)`` that ``rank`` owns: a contiguous block of ``E / W`` experts."""
    num_experts = check_int("num_experts", num_experts, minimum=1)
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=world_size - 1)
    if num_experts % world_size:
        raise ValueError(f"world_size must divide num_experts={num_experts} (each rank owns the same number "
                         f"of experts); got world_size={world_size}")
    per_rank = num_experts // world_size
    return rank * per_rank, (rank + 1) * per_rank


def ranks_reached(indices, num_experts: int, world_size: int) -> np.ndarray:
    """How many distinct ranks each token's chosen experts live on (its own rank included), shape ``[N]``.

    ``indices [N, K]``: the chosen experts (a ``Tensor`` or an array); rank ``r`` owns the contiguous block
    ``expert_range(num_experts, world_size, r)``. The same count gives the *nodes* a token reaches when
    ``world_size`` is the number of nodes (a node holds a contiguous block of experts too). Group-limited
    routing with one group per rank (``n_group = world_size``) keeps it at most ``topk_group``.
    """
    expert_range(num_experts, world_size, 0)  # checks that world_size divides num_experts
    ids = np.asarray(indices.asnumpy() if hasattr(indices, "asnumpy") else indices)
    if ids.ndim != 2:
        raise ValueError(f"indices must have shape (tokens, top_k), got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_experts):
        raise ValueError(f"indices must be expert ids in [0, {num_experts}), got values from {ids.min()} to "
                         f"{ids.max()}")
    owner = ids.astype(np.int64) // (num_experts // world_size)
    hit = np.zeros((ids.shape[0], world_size), bool)
    hit[np.arange(ids.shape[0])[:, None], owner] = True
    return hit.sum(1)


def ring_bytes(op: str, payload_bytes: int, world_size: int) -> int:
    """Bytes one rank sends (and, symmetrically, receives) in a ring implementation of ``op``.

    ``payload_bytes`` is the size of the tensor this rank passes to the collective.
    all_gather: ``(W-1) * payload``; all_reduce: ``2 (W-1) / W * payload``; all_to_all:
    ``(W-1) / W * payload`` (rounded down to whole bytes). One rank alone moves nothing.
    """
    w = int(world_size)
    factor = {"all_gather": Fraction(w - 1), "all_reduce": Fraction(2 * (w - 1), w),
              "all_to_all": Fraction(w - 1, w)}
    if op not in factor:
        raise ValueError(f"op must be one of {', '.join(map(repr, factor))}; got {op!r}")
    return int(factor[op] * int(payload_bytes))


@dataclass
class CommRecord:
    """One collective call as one rank saw it."""

    op: str  # the collective that ran: all_gather | all_reduce | all_to_all
    phase: str  # what it carried, e.g. "dispatch: tokens"
    shape: list[int]
    dtype: str
    payload: int  # bytes of this rank's input tensor
    sent: int  # bytes this rank sent (ring accounting, see ring_bytes)
    received: int
    seconds: float  # from the call until its result was on the host (includes waiting for peers)
    alltoall_bytes: int | None = None  # for an emulated AlltoAll: what a real AlltoAll would send


# ---------------------------------------------------------------------------------------------
# Collectives


class Communicator:
    """The collectives expert parallelism needs, each call logged with the bytes it moves.

    ``world_size == 1`` needs no launcher: every collective is the identity (useful in a notebook).
    On a CPU backend ``all_to_all`` is emulated with ``AllGather`` (MindSpore has no CPU AlltoAll).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, device: str = "CPU"):
        self.rank, self.world_size, self.device = int(rank), int(world_size), device
        self.records: list[CommRecord] = []
        self._ops: dict = {}

    @classmethod
    def from_environment(cls, device: str) -> Communicator:
        """Join the msrun job (``mindspore.communication.init``) and read rank and world size."""
        init()  # MCCL on CPU, HCCL on Ascend
        return cls(get_rank(), get_group_size(), device)

    @property
    def emulates_alltoall(self) -> bool:
        return self.device != "Ascend" and self.world_size > 1

    def _op(self, name: str):
        if name not in self._ops:
            self._ops[name] = {"all_gather": ops.AllGather, "all_reduce": ops.AllReduce,
                               "all_to_all": lambda: ops.AlltoAll(self.world_size, 0, 0)}[name]()
        return self._ops[name]

    def _run(self, op: str, x, phase: str, *, logged_as: str | None = None, alltoall_payload: int | None = None):
        payload = int(np.prod(x.shape)) * x.itemsize
        start = time.perf_counter()
        y = x if self.world_size == 1 else self._op(op)(x)
        y.asnumpy()  # wait for the peers: the time below includes the synchronisation
        seconds = time.perf_counter() - start
        moved = ring_bytes(op, payload, self.world_size)
        ideal = None if alltoall_payload is None else ring_bytes("all_to_all", alltoall_payload, self.world_size)
        self.records.append(CommRecord(logged_as or op, phase, list(x.shape), str(x.dtype), payload, moved, moved,
                                       seconds, ideal))
        return y

    def all_gather(self, x, phase: str):
        """Concatenate every rank's ``x`` along axis 0 (rank order)."""
        return self._run("all_gather", x, phase)

    def all_reduce(self, x, phase: str):
        """Element-wise sum of every rank's ``x``."""
        return self._run("all_reduce", x, phase)

    def all_to_all(self, x, phase: str):
        """Block ``d`` of ``x`` (``W`` equal blocks along axis 0) goes to rank ``d``; the blocks received
        are concatenated in source-rank order."""
        if not self.emulates_alltoall:
            return self._run("all_to_all", x, phase)
        # CPU: gather every rank's whole buffer, keep the blocks addressed to this rank
        payload = int(np.prod(x.shape)) * x.itemsize
        gathered = self._run("all_gather", x, phase, logged_as="all_gather (emulates all_to_all)",
                             alltoall_payload=payload)
        w, block = self.world_size, x.shape[0] // self.world_size
        blocks = gathered.reshape((w, w, block) + tuple(x.shape[1:]))[:, self.rank]
        return blocks.reshape((w * block,) + tuple(x.shape[1:]))

    def take_records(self) -> list[CommRecord]:
        records, self.records = self.records, []
        return records


# ---------------------------------------------------------------------------------------------
# Strategy choice


def fused_dispatch_violations(soc: str | None, *, world_size: int, hidden_size: int, tokens_per_rank: int,
                              top_k: int, num_experts: int, dtype: str) -> list[str]:
    """Why ``MoeDistributeDispatch/Combine`` cannot run this layer (empty list: it can), in the package's
    language (notebook 06 prints the first one).

    The limits are those of the MindSpore 2.10 docstring (``FUSED_CONSTRAINTS``).
    """
    limits = FUSED_CONSTRAINTS.get((soc or "").lower())
    if limits is None:
        return [_("SoC {soc} has no MoeDistributeDispatch kernel (Atlas A2 ascend910b / A3 ascend910_93 only)")
                .format(soc=soc or "none")]
    problems = []
    if world_size not in limits["ep_world_size"]:
        problems.append(_("ep_world_size={world_size} not in {allowed}").format(
            world_size=world_size, allowed=limits["ep_world_size"]))
    if "max_hidden" in limits and not (0 < hidden_size <= limits["max_hidden"]
                                       and hidden_size % limits["hidden_multiple"] == 0):
        problems.append(_("hidden_size={hidden_size} must be <= {max_hidden} and a multiple of {multiple}").format(
            hidden_size=hidden_size, max_hidden=limits["max_hidden"], multiple=limits["hidden_multiple"]))
    if "hidden_exact" in limits and hidden_size != limits["hidden_exact"]:
        problems.append(f"hidden_size={hidden_size} != {limits['hidden_exact']}")
    if not 0 < tokens_per_rank <= limits["max_tokens_per_rank"]:
        problems.append(_("tokens_per_rank={tokens_per_rank} not in (0, {maximum}]").format(
            tokens_per_rank=tokens_per_rank, maximum=limits["max_tokens_per_rank"]))
    if not 0 < top_k <= limits["max_top_k"]:
        problems.append(_("top_k={top_k} not in (0, {maximum}]").format(top_k=top_k, maximum=limits["max_top_k"]))
    if num_experts > limits["max_experts"] or num_experts % world_size:
        problems.append(_("num_experts={num_experts} must be <= {max_experts} and divisible by "
                          "ep_world_size={world_size}").format(num_experts=num_experts,
                                                               max_experts=limits["max_experts"],
                                                               world_size=world_size))
    if dtype not in limits["dtypes"]:
        problems.append(_("dtype={dtype} not in {allowed}").format(dtype=dtype, allowed=limits["dtypes"]))
    return problems


@dataclass(frozen=True)
class StrategyChoice:
    strategy: str
    reason: str


def choose_strategy(backend, *, world_size: int, hidden_size: int, tokens_per_rank: int, top_k: int,
                    num_experts: int, dtype: str = "float32") -> StrategyChoice:
    """Pick how tokens travel, from the detected backend (``moe_lab.backend.detect_backend()``).

    CPU (or any non-Ascend device): ``"allgather"``, because MindSpore's CPU collectives have no AlltoAll.
    Ascend: ``"fused"`` when the SoC has MoeDistributeDispatch and every constraint holds, else
    ``"alltoall"`` (HCCL), with the first violated constraint as the reason.
    """
    device = getattr(backend, "device", "CPU")
    if device != "Ascend":
        return StrategyChoice("allgather", _("device {device}: MindSpore has AllGather and AllReduce here but no "
                                             "AlltoAll, so dispatch = AllGather, combine = AllReduce").format(
                                                 device=device))
    soc = getattr(backend, "soc", None)
    problems = fused_dispatch_violations(soc, world_size=world_size, hidden_size=hidden_size,
                                         tokens_per_rank=tokens_per_rank, top_k=top_k,
                                         num_experts=num_experts, dtype=dtype)
    if not problems:
        return StrategyChoice("fused", _("SoC {soc}: every MoeDistributeDispatch constraint holds").format(soc=soc))
    return StrategyChoice("alltoall", _("HCCL AlltoAll; the fused MoeDistributeDispatch is out: {problem}").format(
        problem=problems[0]))


# ---------------------------------------------------------------------------------------------
# The expert-parallel layer


@dataclass
class EPStats:
    """What one forward pass did on one rank."""

    strategy: str
    expert_load: list[int]  # rows each LOCAL expert processed (global expert ids first..last-1)
    rows_processed: int
    padded_rows: int = 0  # alltoall: rows sent only to make the blocks equal (zeros)
    records: list[CommRecord] = field(default_factory=list)
    # ranks_reached[j]: this rank's tokens whose experts live on j + 1 distinct ranks (own rank included)
    ranks_reached: list[int] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return sum(r.sent for r in self.records)

    @property
    def bytes_received(self) -> int:
        return sum(r.received for r in self.records)


class ExpertParallelMoE:
    """The expert-parallel version of a ``MoELayer``: the layer's own router and shared experts, this rank's
    slice of the routed experts.

    Built from a full ``MoELayer`` made with the same seed on every rank (a real system would load only
    its slice from a checkpoint). Any router the layer has works unchanged (softmax, sigmoid, group-limited,
    with a selection bias or a routed scaling factor): routing goes through ``layer.route_tensors``.
    Dropless only: a capacity limit would need a global count per expert.
    ``ep(x_local, strategy)`` returns this rank's output rows and an ``EPStats``. The output is
    ``layer.add_shared_experts(x_local, routed)``: the block is assembled by the layer itself, so a
    shared expert cannot be forgotten; shared experts are replicated (DeepSeek-V3 and openPangu have one,
    a single FFN that every token needs: each rank applies it to its own tokens, with no communication).
    """

    def __init__(self, layer, comm: Communicator):
        if layer.capacity_factor is not None:
            raise ValueError(f"ExpertParallelMoE is dropless: the layer's capacity_factor must be None, "
                             f"got {layer.capacity_factor}")
        self.comm = comm
        self.num_experts, self.top_k = layer.num_experts, layer.top_k
        self.hidden_size = layer.hidden_size
        self.first, self.last = expert_range(layer.num_experts, comm.world_size, comm.rank)
        self.layer = layer  # router and shared experts replicated: every rank routes its own tokens
        w = layer.experts.numpy_weights()
        self.local = {k: None if v is None else Tensor(np.ascontiguousarray(v[self.first:self.last]))
                      for k, v in w.items()}

    @property
    def experts_per_rank(self) -> int:
        return self.last - self.first

    def _expert(self, e_local: int, rows):
        w_gate = None if self.local["w_gate"] is None else self.local["w_gate"][e_local]
        return ffn(rows, w_gate, self.local["w_up"][e_local], self.local["w_down"][e_local])

    def _run_local_experts(self, rows, local_ids: np.ndarray):
        """``rows [M, H]`` and their local expert ids (``-1`` = not mine / padding) -> ``[M, H]`` outputs
        (zeros where the id is -1) and the count per local expert. One matmul chain per expert."""
        m = rows.shape[0]
        mine = np.flatnonzero(local_ids >= 0)
        order = mine[np.argsort(local_ids[mine], kind="stable")]
        counts = np.bincount(local_ids[mine], minlength=self.experts_per_rank)
        if order.size == 0:
            return ops.zeros((m, rows.shape[1]), rows.dtype), counts
        sorted_rows = ops.gather(rows, Tensor(order.astype(np.int32)), 0)
        blocks, start = [], 0
        for e, count in enumerate(counts.tolist()):
            if count:
                blocks.append(self._expert(e, sorted_rows[start:start + count]))
                start += count
        out = ops.unsorted_segment_sum(ops.concat(blocks, 0), Tensor(order.astype(np.int32)), m)
        return out, counts

    def __call__(self, x, strategy: str = "allgather"):
        check_choice("strategy", strategy, STRATEGIES)
        self.comm.take_records()
        forward = {"allgather": self._forward_allgather, "alltoall": self._forward_alltoall,
                   "fused": self._forward_fused}[strategy]
        indices, weights = self._route(x)
        routed, counts, padded = forward(x, indices, weights)
        out = self.layer.add_shared_experts(x, routed)  # shared experts: this rank's tokens, no communication
        reached = np.bincount(ranks_reached(indices, self.num_experts, self.comm.world_size),
                              minlength=self.comm.world_size + 1)[1:]
        stats = EPStats(strategy, [int(c) for c in counts], int(counts.sum()), int(padded),
                        self.comm.take_records(), [int(c) for c in reached])
        return out, stats

    def _route(self, x):
        """This rank's routing (the layer's own router): ``indices [n, K]``, ``weights [n, K]``."""
        _, _, indices, weights, _ = self.layer.route_tensors(x)
        return indices, weights

    def _forward_allgather(self, x, indices, weights):
        comm, n = self.comm, x.shape[0]
        tokens = comm.all_gather(x, "dispatch: tokens")  # [W n, H]
        ids = comm.all_gather(indices, "dispatch: expert ids").asnumpy().reshape(-1)  # slot = t*K + k
        weights = comm.all_gather(weights, "dispatch: combine weights").reshape(-1)  # [W n K]
        # only the slots routed to one of my experts become rows; the other ranks handle the rest
        mine = np.flatnonzero((ids >= self.first) & (ids < self.last))
        counts = np.bincount(ids[mine] - self.first, minlength=self.experts_per_rank)
        if mine.size:
            slot_token = Tensor((mine // self.top_k).astype(np.int32))
            rows = ops.gather(tokens, slot_token, 0)
            y, counts = self._run_local_experts(rows, ids[mine] - self.first)
            y = y * ops.gather(weights, Tensor(mine.astype(np.int32)), 0).reshape(-1, 1)
            partial = ops.unsorted_segment_sum(y, slot_token, tokens.shape[0])  # [W n, H], zeros elsewhere
        else:  # none of the gathered tokens chose my experts: I still take part in the AllReduce
            partial = ops.zeros(tokens.shape, tokens.dtype)
        full = comm.all_reduce(partial, "combine: partial outputs")
        return full[comm.rank * n:(comm.rank + 1) * n], counts, 0

    def _forward_alltoall(self, x, indices, weights):
        comm, w, n, k = self.comm, self.comm.world_size, x.shape[0], self.top_k
        ids = indices.asnumpy().reshape(-1)  # slot j = token * K + k
        dest = ids // self.experts_per_rank
        send_counts = np.bincount(dest, minlength=w).astype(np.int32)
        counts = comm.all_gather(Tensor(send_counts), "dispatch: counts").asnumpy().reshape(w, w)
        capacity = max(int(counts.max()), 1)  # rows per (source, destination) block, same on all ranks
        plan = pack_plan(dest, ids - dest * self.experts_per_rank, w, capacity)
        x_pad = ops.concat([x, ops.zeros((1, x.shape[1]), x.dtype)], 0)  # row n = the padding row
        send_rows = np.where(plan.slot >= 0, plan.slot // k, n).astype(np.int32)
        send_x = ops.gather(x_pad, Tensor(send_rows), 0)  # [W C, H]
        recv_x = comm.all_to_all(send_x, "dispatch: tokens")
        recv_ids = comm.all_to_all(Tensor(plan.local_id), "dispatch: expert ids").asnumpy()
        y, local_counts = self._run_local_experts(recv_x, recv_ids)
        back = comm.all_to_all(y, "combine: expert outputs")  # block d: my rows that rank d processed
        valid = np.flatnonzero(plan.slot >= 0)
        slots = plan.slot[valid]
        y_slots = ops.gather(back, Tensor(valid.astype(np.int32)), 0)
        y_slots = y_slots * ops.gather(weights.reshape(-1), Tensor(slots.astype(np.int32)), 0).reshape(-1, 1)
        out = ops.unsorted_segment_sum(y_slots, Tensor((slots // k).astype(np.int32)), n)
        padded = int(w * capacity - send_counts.sum())
        return out, local_counts, padded

    def _forward_fused(self, x, indices, weights):  # pragma: no cover - needs >= 8 Atlas A3 / 16 Atlas A2 NPUs
        """MoeDistributeDispatch -> local experts -> MoeDistributeCombine, per the MindSpore 2.10 docstrings.

        Not executed by the course's tests (no Ascend NPU in CI); ``choose_strategy`` selects it only on
        Atlas A2/A3 within the operator's constraints.
        """
        comm = self.comm
        x16 = x.astype(ms.bfloat16)
        expand_x, _, expand_idx, expert_token_nums, ep_recv_counts, _, expand_scales = ops.moe_distribute_dispatch(
            x16, indices, comm.world_size, comm.rank, self.num_experts,
            expert_scales=weights.astype(ms.float32), group_ep=GlobalComm.WORLD_COMM_GROUP,
            expert_token_nums_type=1)
        counts = expert_token_nums.asnumpy().astype(np.int64)
        local_ids = np.full(expand_x.shape[0], -1, np.int64)
        local_ids[:counts.sum()] = np.repeat(np.arange(counts.size), counts)  # rows arrive grouped by expert
        y, _ = self._run_local_experts(expand_x.astype(ms.float32), local_ids)
        out = ops.moe_distribute_combine(
            y.astype(ms.bfloat16), indices, expand_idx, ep_recv_counts, weights.astype(ms.float32),
            comm.world_size, comm.rank, self.num_experts, group_ep=GlobalComm.WORLD_COMM_GROUP,
            expand_scales=expand_scales)
        return out.astype(x.dtype), counts, 0


@dataclass
class PackPlan:
    """Where each slot goes in the ``[W * C]`` send buffer of the AlltoAll strategy.

    ``slot[p]``: the slot (``token * K + k``) at buffer position ``p = d * C + i``, or -1 (padding);
    ``local_id[p]``: its expert id on the destination rank ``d`` (``-1`` for padding), int32.
    """

    slot: np.ndarray
    local_id: np.ndarray
    capacity: int


def pack_plan(dest: np.ndarray, local_id: np.ndarray, world_size: int, capacity: int) -> PackPlan:
    """Group the slots by destination rank, in slot order, into ``world_size`` blocks of ``capacity`` rows."""
    dest, local_id = np.asarray(dest).reshape(-1), np.asarray(local_id).reshape(-1)
    counts = np.bincount(dest, minlength=world_size)
    if counts.size > world_size or counts.max(initial=0) > capacity:
        raise ValueError(f"capacity={capacity} is smaller than the largest block ({counts.max()} rows)")
    slot = np.full(world_size * capacity, -1, np.int64)
    ids = np.full(world_size * capacity, -1, np.int32)
    order = np.argsort(dest, kind="stable")  # slots of one destination stay in slot order
    starts = np.cumsum(counts) - counts
    place = np.arange(order.size) - starts[dest[order]]
    pos = dest[order] * capacity + place
    slot[pos] = order
    ids[pos] = local_id[order]
    return PackPlan(slot, ids, capacity)
