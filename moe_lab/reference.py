"""An independent NumPy implementation of the MoE layer, in float64 (notebook 01, "three ways").

It shares no code with the MindSpore layer: only the weights are copied. Tests and notebooks
compare every MindSpore path against it.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def silu(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


def route_numpy(x, router_weight, top_k, normalize=True, selection_bias=None):
    """Return ``(probs [N,E], indices [N,K], weights [N,K])``, indices best first."""
    probs = softmax(x @ router_weight)
    score = probs if selection_bias is None else probs + selection_bias
    indices = np.argsort(-score, axis=-1, kind="stable")[:, :top_k]
    weights = np.take_along_axis(probs, indices, -1)
    if normalize:
        weights = weights / weights.sum(-1, keepdims=True)
    return probs, indices, weights


def keep_numpy(indices, weights, num_experts, capacity_factor, drop_policy="position"):
    """Capacity as a plain queue per expert, written as a loop over slots in priority order."""
    n, k = indices.shape
    keep = np.ones((n, k), bool)
    if capacity_factor is None:
        return keep
    capacity = math.ceil(round(capacity_factor * n * k / num_experts, 9))
    if drop_policy == "position":
        order = [(t, j) for j in range(k) for t in range(n)]
    else:
        order = sorted(((t, j) for t in range(n) for j in range(k)), key=lambda s: -weights[s])
    used = np.zeros(num_experts, int)
    for t, j in order:
        e = indices[t, j]
        keep[t, j] = used[e] < capacity
        used[e] += 1
    return keep


def expert_numpy(x, w_gate, w_up, w_down):
    up = x @ w_up
    hidden = silu(x @ w_gate) * up if w_gate is not None else np.maximum(up, 0.0)
    return hidden @ w_down


def moe_forward_numpy(x, router_weight, w_gate, w_up, w_down, top_k, normalize=True,
                      capacity_factor=None, drop_policy="position", selection_bias=None):
    """MoE forward for ``x [N, H]`` with stacked expert weights ``w_* [E, ...]`` (``w_gate`` may be None)."""
    x = np.asarray(x, np.float64)
    probs, indices, weights = route_numpy(x, np.asarray(router_weight, np.float64), top_k, normalize,
                                          selection_bias)
    keep = keep_numpy(indices, weights, w_up.shape[0], capacity_factor, drop_policy)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(top_k):
            if keep[t, j]:
                e = indices[t, j]
                gate = None if w_gate is None else np.asarray(w_gate[e], np.float64)
                out[t] += weights[t, j] * expert_numpy(x[t:t + 1], gate, np.asarray(w_up[e], np.float64),
                                                       np.asarray(w_down[e], np.float64))[0]
    return out


def layer_forward_numpy(layer, x) -> np.ndarray:
    """Run the NumPy reference with the weights of a ``MoELayer`` on ``x`` (array or Tensor)."""
    x = x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)
    shape = x.shape
    w = layer.experts.numpy_weights()
    out = moe_forward_numpy(x.reshape(-1, layer.hidden_size), layer.router.weight.asnumpy(), w["w_gate"],
                            w["w_up"], w["w_down"], layer.top_k, layer.router.normalize, layer.capacity_factor,
                            layer.drop_policy, layer.router.selection_bias.asnumpy())
    return out.reshape(shape)
