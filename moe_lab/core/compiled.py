"""A whole MoE layer (router + dispatch) compiled with ``mindspore.jit``: forward, and forward+backward.

Introduced in notebook 03 (section "How fast is each path?"); the benchmark in ``benchmarks/`` uses it.

    fast = CompiledMoE(layer, dispatch="capacity")
    y = fast(x)                          # same output as layer(x, dispatch="capacity")
    loss, grads = fast.value_and_grad(x) # loss = mean(y**2), grads of layer.trainable_params()

Why not simply ``mindspore.jit(layer)``? Two reasons, both about graph mode:

* ``Routing`` is a Python dataclass. Inside a compiled graph MindSpore builds it through its Python
  fallback: the dtypes and shapes of its fields are then unknown at compile time, so ops that need
  them (``ops.arange`` in the capacity mask) fail to compile, and, worse, gradients do not flow through
  it (``jit`` of ``value_and_grad(layer(x))`` returns all-zero gradients, silently; measured on
  MindSpore 2.10). ``MoELayer.route_tensors`` computes the same routing as plain tensors.
* A dropless layer has no capacity, but the static path needs one. It is read on the host from the
  routing (``padded_capacity``): one small sync, then the graph compiled for that capacity runs
  (MindSpore caches one graph per capacity value; rounding keeps the number of values small).
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from moe_lab.checks import check_choice
from moe_lab.core.capacity import expert_capacity
from moe_lab.core.dispatch import dense_moe
from moe_lab.core.static import capacity_moe, padded_capacity

COMPILED_DISPATCH = ("capacity", "dense")


def _forward(layer, dispatch: str, x: Tensor, indices: Tensor | None, weights: Tensor | None,
             capacity: int | None) -> Tensor:
    """Router + dispatch + shared experts on ``x`` (any leading shape); traced by ``mindspore.jit``.

    Given ``weights`` (forward of the dropless path: the router already ran), the router is skipped;
    given only ``indices`` (its backward), the weights are recomputed so that their gradient exists.
    """
    rows = x.reshape(-1, layer.hidden_size)
    if weights is None:
        _, _, indices, weights, keep = layer.route_tensors(rows, indices)
    else:
        keep = ops.ones(indices.shape, ms.bool_)
    experts = layer.experts
    if dispatch == "dense":
        out = dense_moe(rows, indices, weights, experts)
    else:
        layer_capacity = expert_capacity(rows.shape[0], layer.num_experts, layer.top_k, layer.capacity_factor)
        if layer_capacity is not None:
            capacity = layer_capacity
        out = capacity_moe(rows, indices, weights, keep, experts.w_gate, experts.w_up, experts.w_down, capacity)
    return layer.add_shared_experts(rows, out).reshape(x.shape)


def mean_square(y: Tensor) -> Tensor:
    """The loss of the forward+backward benchmark: ``mean(y**2)`` (any loss would do; this one is cheap).
    Introduced in notebook 03."""
    return (y * y).mean()


class CompiledMoE:
    """``layer`` compiled with ``mindspore.jit`` for one dispatch path (``"capacity"`` or ``"dense"``).
    Introduced in notebook 03.

    The weights are the layer's own Parameters (no copy): in-place updates (``ops.assign``, optimizer
    steps) are seen by the next call. ``Parameter.set_data`` is not: it gives the parameter a new buffer
    and the compiled graphs keep reading the old one (MindSpore 2.10), so build a new ``CompiledMoE``. For a
    dropless layer with ``dispatch="capacity"``, each call first runs the compiled router, reads the
    largest expert load on the host and picks ``padded_capacity`` for it; ``last_capacity`` keeps it.
    """

    def __init__(self, layer, dispatch: str = "capacity"):
        self.layer = layer
        self.dispatch = check_choice("dispatch", dispatch, COMPILED_DISPATCH)
        self.params = layer.trainable_params()
        self.last_capacity: int | None = None

        def route(x):
            _, _, indices, weights, _ = layer.route_tensors(x.reshape(-1, layer.hidden_size))
            return indices, weights

        def forward(x, indices, weights, capacity):
            return _forward(layer, self.dispatch, x, indices, weights, capacity)

        def loss(x, indices, capacity):
            return mean_square(_forward(layer, self.dispatch, x, indices, None, capacity))

        grad_fn = ms.value_and_grad(loss, grad_position=None, weights=self.params)

        def value_and_grad(x, indices, capacity):
            return grad_fn(x, indices, capacity)

        self._route = ms.jit(route)
        self._forward = ms.jit(forward)
        self._value_and_grad = ms.jit(value_and_grad)

    @property
    def needs_host_capacity(self) -> bool:
        """True for the dropless static path: the capacity is read from each batch's routing."""
        return self.dispatch == "capacity" and self.layer.capacity_factor is None

    def plan(self, x: Tensor) -> tuple[Tensor | None, Tensor | None, int | None]:
        """The host step of the dropless static path: ``(indices, weights, capacity)``; else Nones.

        Runs the compiled router, reads the expert loads on the host (the only sync) and rounds the
        largest one up with ``padded_capacity``.
        """
        if not self.needs_host_capacity:
            return None, None, None
        indices, weights = self._route(x)
        load = np.bincount(indices.asnumpy().reshape(-1), minlength=self.layer.num_experts)
        tokens = int(np.prod(x.shape[:-1]))
        self.last_capacity = padded_capacity(int(load.max()), tokens)
        return indices, weights, self.last_capacity

    def __call__(self, x: Tensor) -> Tensor:
        if int(np.prod(x.shape[:-1])) == 0:  # like every eager path: an empty output (MindSpore 2.10 cannot
            return ops.zeros(x.shape, x.dtype)  # compile a graph of 0 rows: OneHot refuses a 0-sized shape)
        indices, weights, capacity = self.plan(x)
        return self._forward(x, indices, weights, capacity)

    def value_and_grad(self, x: Tensor):
        """``(loss, grads)`` with ``loss = mean(layer(x)**2)``, grads in ``layer.trainable_params()`` order.
        No token: loss 0 and zero gradients."""
        if int(np.prod(x.shape[:-1])) == 0:
            return ops.zeros((), x.dtype), tuple(ops.zeros_like(p) for p in self.params)
        indices, _, capacity = self.plan(x)
        return self._value_and_grad(x, indices, capacity)
