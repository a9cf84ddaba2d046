"""count_params reads real Parameters; the closed-form formula must agree with it."""

import pytest
from mindspore import nn

from moe_lab import Expert, MoELayer, count_params, moe_layer_params
from moe_lab.core.params import expert_params


@pytest.mark.parametrize("h, f, e, k, act", [(8, 12, 4, 2, "swiglu"), (16, 64, 8, 1, "relu"),
                                             (512, 2048, 8, 2, "swiglu"), (4, 4, 3, 3, "relu")])
def test_count_matches_closed_form(h, f, e, k, act):
    layer = MoELayer(h, f, e, k, activation=act)
    counted = count_params(layer)
    formula = moe_layer_params(h, f, e, k, act)
    assert counted == formula
    assert formula.total == h * e + e * (3 if act == "swiglu" else 2) * h * f
    assert formula.active == h * e + k * (3 if act == "swiglu" else 2) * h * f


def test_dense_expert_and_nested_cells():
    assert count_params(Expert(8, 12)).total == expert_params(8, 12) == 3 * 8 * 12

    class TwoLayers(nn.Cell):
        def __init__(self):
            super().__init__()
            self.a = MoELayer(8, 12, 4, 2)
            self.b = MoELayer(8, 12, 6, 1)
            self.ffn = Expert(8, 16, "relu")

    c = count_params(TwoLayers())
    a, b = moe_layer_params(8, 12, 4, 2), moe_layer_params(8, 12, 6, 1)
    assert c.total == a.total + b.total + 2 * 8 * 16
    assert c.active == a.active + b.active + 2 * 8 * 16
    assert 0 < c.active_fraction < 1


def test_mixtral_layer_ffn_count():
    """One Mixtral-8x7B MoE FFN (H 4096, F 14336, 8 experts, top-2): 176.2M per expert."""
    p = moe_layer_params(4096, 14336, 8, 2)
    assert expert_params(4096, 14336) == 176_160_768
    assert p.total == 8 * 176_160_768 + 4096 * 8
    assert p.active == 2 * 176_160_768 + 4096 * 8


def test_bad_input():
    with pytest.raises(TypeError, match="cell must be a mindspore.nn.Cell"):
        count_params("layer")
    with pytest.raises(ValueError, match="top_k must be <= 4, got 5"):
        moe_layer_params(8, 8, 4, 5)
    with pytest.raises(ValueError, match="activation must be one of"):
        expert_params(8, 8, "gelu")
