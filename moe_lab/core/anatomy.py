"""What the MoE blocks of real models are made of, measured: notebook 02 ("From Mixtral to openPangu").

Small pure functions, each for one question of the notebook:

* ``expert_combinations``: how many expert sets a token can choose (fine-grained experts, group limits);
* ``SkillTask``, ``train_block``, ``expert_purity``, ``shared_fit``: a synthetic task made of many small
  "skills" that each token combines, the situation fine-grained and shared experts are designed for
  (DeepSeekMoE, arXiv 2401.06066), and what training measures on it;
* ``output_rms``: the scale of the routed and shared outputs (what ``routed_scaling_factor`` changes);
* ``group_span`` and ``cross_node_bytes``: how many groups (nodes) a token's experts live on, and what a
  token sends across nodes, with and without DeepSeek-V3's group limit;
* ``precision_flips``: how many expert choices change when the router computes in bfloat16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from moe_lab.checks import check_choice, check_int
from moe_lab.core.layer import MoELayer
from moe_lab.core.reference import round_to, route_logits_numpy


def expert_combinations(num_experts: int, top_k: int, n_group: int = 1, topk_group: int | None = None) -> int:
    """The number of distinct sets of ``top_k`` experts a token can be routed to.

    Without groups: ``C(E, k)``. With ``n_group`` groups of ``E / n_group`` experts of which a token may use
    at most ``topk_group``: the k-sets that touch at most ``topk_group`` groups, counted exactly by
    inclusion-exclusion over the groups a set uses.
    """
    e = check_int("num_experts", num_experts, minimum=1)
    k = check_int("top_k", top_k, minimum=1, maximum=e)
    g = check_int("n_group", n_group, minimum=1)
    if e % g:
        raise ValueError(f"n_group must divide num_experts={e}, got n_group={g}")
    t = g if topk_group is None else check_int("topk_group", topk_group, minimum=1, maximum=g)
    size = e // g

    def onto(j: int) -> int:  # k-sets drawn from exactly j given groups that use every one of them
        return sum((-1) ** i * math.comb(j, i) * math.comb((j - i) * size, k) for i in range(j + 1))

    return sum(math.comb(g, j) * onto(j) for j in range(1, t + 1))


# ----------------------------------------------------------------------------- a task made of skills


@dataclass(frozen=True)
class SkillTask:
    """Tokens that each need ``skills_per_token`` of ``num_skills`` small skills, plus an optional common one.

    A token is ``x = [skill code (num_skills), content (content_size)]``: the code marks its skills (what a
    router can read), the content is what the skills act on. The target is the sum of the token's skill
    functions ``tanh(content @ M_s)``, plus ``common * tanh(content @ M_common)``, a skill every token needs.
    """

    num_skills: int = 16
    skills_per_token: int = 2
    content_size: int = 16
    common: float = 0.0
    seed: int = 0

    def __post_init__(self):
        check_int("num_skills", self.num_skills, minimum=2)
        check_int("skills_per_token", self.skills_per_token, minimum=1, maximum=self.num_skills)
        check_int("content_size", self.content_size, minimum=1)

    @property
    def hidden_size(self) -> int:
        return self.num_skills + self.content_size

    def maps(self) -> np.ndarray:
        """``[num_skills + 1, content_size, hidden_size]``: each skill's map, the common skill last."""
        rng = np.random.default_rng([self.seed, 17])
        return rng.normal(size=(self.num_skills + 1, self.content_size, self.hidden_size)) / np.sqrt(self.content_size)

    def batch(self, rng: np.random.Generator, n: int):
        """``(x [n, H], y [n, H], common_part [n, H], skills [n, skills_per_token])``, float32."""
        k, s = self.num_skills, self.skills_per_token
        maps = self.maps()
        skills = np.argsort(rng.random((n, k)), axis=1)[:, :s]
        code = np.zeros((n, k))
        np.put_along_axis(code, skills, 1.0, 1)
        content = rng.normal(size=(n, self.content_size))
        x = np.concatenate([code + 0.05 * rng.normal(size=(n, k)), content], 1)
        own = sum(np.tanh(np.einsum("nc,nch->nh", content, maps[skills[:, j]])) for j in range(s))
        common = self.common * np.tanh(content @ maps[k])
        return (x.astype(np.float32), (own + common).astype(np.float32), common.astype(np.float32), skills)


@dataclass(frozen=True)
class TrainedBlock:
    layer: MoELayer
    loss: np.ndarray  # [steps] training loss
    val_loss: float  # mean squared error on 4096 held-out tokens


def train_block(layer: MoELayer, task: SkillTask, steps: int = 400, batch_size: int = 256, lr: float = 5e-3,
                seed: int = 1) -> TrainedBlock:
    """Fit ``layer`` to ``task`` (mean squared error, Adam, a jitted step on the "dense" path)."""
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if layer.hidden_size != task.hidden_size:
        raise ValueError(f"layer.hidden_size must be the task's {task.hidden_size}, got {layer.hidden_size}")
    optimizer = nn.Adam(layer.trainable_params(), learning_rate=lr)

    def loss_fn(x, y):
        return ((layer(x, "dense") - y) ** 2).mean()

    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        optimizer(grads)
        return loss

    rng = np.random.default_rng(seed)
    history = []
    for _ in range(steps):
        x, y, _, _ = task.batch(rng, batch_size)
        history.append(float(step(Tensor(x), Tensor(y)).asnumpy()))
    x, y, _, _ = task.batch(np.random.default_rng([seed, 99]), 4096)
    return TrainedBlock(layer, np.array(history), float(loss_fn(Tensor(x), Tensor(y)).asnumpy()))


def expert_purity(layer: MoELayer, task: SkillTask, tokens: int = 4096, seed: int = 5) -> float:
    """How specialised the experts are: over the experts, the share of an expert's tokens that carry its most
    frequent skill (weighted by the expert's load). 1.0: every expert serves one skill."""
    x, _, _, skills = task.batch(np.random.default_rng([seed, 3]), tokens)
    indices = layer.route(Tensor(x)).indices.asnumpy()
    pure = total = 0
    for e in range(layer.num_experts):
        rows = np.flatnonzero((indices == e).any(1))
        if rows.size:
            pure += np.bincount(skills[rows].ravel(), minlength=task.num_skills).max()
            total += rows.size
    return pure / total


def shared_fit(layer: MoELayer, task: SkillTask, tokens: int = 4096, seed: int = 7) -> float:
    """The share of the common skill's variance that the shared experts' output explains (R^2)."""
    if layer.shared_experts is None:
        raise ValueError("layer has no shared experts")
    x, _, common, _ = task.batch(np.random.default_rng([seed, 4]), tokens)
    shared = layer.shared_experts(Tensor(x)).asnumpy()
    return float(1.0 - ((shared - common) ** 2).mean() / common.var())


def output_rms(layer: MoELayer, x: Tensor) -> dict[str, float]:
    """Root-mean-square of the block's routed output, its shared output, and of the input (float32 "sorted")."""
    rows = x.reshape(-1, layer.hidden_size)
    routed = layer(rows, dispatch="sorted") if layer.shared_experts is None else \
        layer(rows, dispatch="sorted") - layer.shared_experts(rows)
    out = {"input": float(np.sqrt((rows.asnumpy() ** 2).mean())),
           "routed": float(np.sqrt((routed.asnumpy() ** 2).mean()))}
    if layer.shared_experts is not None:
        out["shared"] = float(np.sqrt((layer.shared_experts(rows).asnumpy() ** 2).mean()))
    return out


# ----------------------------------------------------------------------------- groups and nodes


def group_span(indices, num_experts: int, n_group: int) -> np.ndarray:
    """``[N]``: how many distinct groups of ``E / n_group`` consecutive experts each token's experts are in."""
    indices = np.asarray(indices.asnumpy() if hasattr(indices, "asnumpy") else indices)
    e = check_int("num_experts", num_experts, minimum=1)
    g = check_int("n_group", n_group, minimum=1)
    if e % g:
        raise ValueError(f"n_group must divide num_experts={e}, got n_group={g}")
    groups = indices // (e // g)
    return np.array([np.unique(row).size for row in groups])


def cross_node_bytes(indices, num_experts: int, num_nodes: int, hidden_size: int, bytes_per_value: int = 2,
                     seed: int = 0) -> np.ndarray:
    """``[N]``: bytes each token sends to other nodes to reach its experts.

    Experts are spread over ``num_nodes`` nodes in contiguous blocks; every token lives on a random node (seeded)
    and sends one copy of its ``hidden_size`` values to each *other* node that holds one of its experts (the
    node forwards it to its own GPUs/NPUs: DeepSeek-V3's dispatch). Bytes per value: 2 for bfloat16.
    """
    span_nodes = np.asarray(indices.asnumpy() if hasattr(indices, "asnumpy") else indices) // (num_experts // num_nodes)
    home = np.random.default_rng(seed).integers(0, num_nodes, span_nodes.shape[0])
    remote = np.array([np.setdiff1d(row, [h]).size for row, h in zip(span_nodes, home, strict=True)])
    return remote * hidden_size * check_int("bytes_per_value", bytes_per_value, minimum=1)


# ----------------------------------------------------------------------------- router precision


def precision_flips(x, router_weight, top_k: int, dtype: str = "bfloat16", *, scoring_func: str = "sigmoid",
                    **router) -> float:
    """Fraction of tokens whose set of chosen experts changes when the router computes in ``dtype``.

    The reference is float32 (x, the gate and the logits in float32); the other run rounds x, the gate, the
    logits and the scores to ``dtype`` (``moe_lab.core.reference.round_to``, round to nearest even), as a
    router computing in that precision would.
    """
    check_choice("dtype", dtype, ("float32", "float16", "bfloat16"))
    x, w = np.asarray(x, np.float64), np.asarray(router_weight, np.float64)
    ref_logits = round_to(round_to(x, "float32") @ round_to(w, "float32"), "float32")
    low_logits = round_to(round_to(x, dtype) @ round_to(w, dtype), dtype)
    _, ref, _ = route_logits_numpy(ref_logits, top_k, scoring_func=scoring_func, dtype="float32", **router)
    _, low, _ = route_logits_numpy(low_logits, top_k, scoring_func=scoring_func, dtype=dtype, **router)
    return float((np.sort(ref, 1) != np.sort(low, 1)).any(1).mean())
