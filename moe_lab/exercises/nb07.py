"""Exercise checkers of notebook 07 (the 718B memory budget). Each returns a ``Feedback``.

Introduced in notebook 07 (section "Exercises"). Expected values are computed from the shipped
openPangu-Ultra-MoE-718B and Llama 4 Scout configs with ``moe_lab.budget``; typical wrong answers get a
specific hint.
"""

from __future__ import annotations

import math

import numpy as np

from moe_lab.budget.count import count_parameters, expert_params
from moe_lab.budget.hardware import load_device
from moe_lab.budget.memory import kv_bytes_per_token, kv_cache_bytes, kv_values_per_token_per_layer, weight_bytes
from moe_lab.budget.spec import load_model
from moe_lab.exercises import Feedback, check_number, right, unanswered, wrong
from moe_lab.i18n import _

MODEL = "openpangu-ultra-moe-718b"
SCOUT = "llama-4-scout"
SCOUT_CONTEXT = 131072


def _as_number(exercise: str, answer) -> tuple[float | None, Feedback | None]:
    missing = unanswered(exercise, answer)
    if missing is not None:  # a Feedback is falsy when wrong: compare with None
        return None, missing
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        return None, wrong(exercise, _("expected a number, got {type}.").format(type=type(answer).__name__))
    return float(answer), None


def _graded(exercise: str, answer, expected: float, hints: dict, rel: float = 1e-9) -> Feedback:
    """Right if ``answer`` equals ``expected``; a known mistake gets its hint (already translated); else too
    large/small."""
    value, problem = _as_number(exercise, answer)
    if problem is not None:
        return problem
    for wrong_value, hint in hints.items():
        if wrong_value != expected and math.isclose(value, wrong_value, rel_tol=rel):
            # i18n: a typical wrong answer, then the hint that names the slip
            return wrong(exercise, _("{value}: {hint}").format(value=f"{value:,.0f}", hint=hint))
    return check_number(exercise, value, expected, rel=rel)


def expert_answer() -> int:
    """Parameters of one routed expert of openPangu-718B in one layer (3 x 7680 x 2048)."""
    return expert_params(load_model(MODEL))


def check_expert_params(answer) -> Feedback:
    """Exercise 1: how many parameters has ONE routed expert of openPangu-718B in ONE layer?"""
    spec = load_model(MODEL)
    h, f = spec.hidden_size, spec.expert_ffn_size
    expected = expert_answer()
    name = _("expert params")
    hints = {
        2 * h * f: _("that is two projections; a SwiGLU expert has three (gate, up and down)."),
        h * f: _("that is one projection; a SwiGLU expert has three (gate, up and down)."),
        expected * spec.num_moe_layers: _("that is one expert summed over all {layers} MoE layers; the question "
                                          "asks for one layer.").format(layers=spec.num_moe_layers),
        expected * spec.num_experts: _("that is all {experts} routed experts of a layer; the question asks for "
                                       "one.").format(experts=spec.num_experts),
    }
    fb = _graded(name, answer, expected, hints)
    if fb.correct:
        return right(name, _("{value} = 3 x {hidden} x {width}: tiny next to the article's '100B per "
                             "expert'.").format(value=f"{expected:,}", hidden=h, width=f))
    return fb


def kv_answer() -> int:
    """KV-cache bytes per token of openPangu-718B in bf16: (512 + 64) x 61 x 2."""
    return kv_bytes_per_token(load_model(MODEL), "bf16")


def check_kv_bytes_per_token(answer) -> Feedback:
    """Exercise 2: bytes of KV cache one token adds to openPangu-718B in bf16 (all layers)."""
    spec = load_model(MODEL)
    r, rope, layers = spec.kv_lora_rank, spec.qk_rope_head_dim, spec.num_layers
    expected = kv_answer()
    name = _("KV bytes per token")
    hints = {
        r * layers * 2: _("MLA also caches the decoupled RoPE key ({rope} values per layer) next to the "
                          "{rank}-value latent.").format(rope=rope, rank=r),
        (r + rope) * layers: _("that is the number of cached values; each takes 2 bytes in bf16."),
        (r + rope) * 2: _("that is one layer; the model has {layers}.").format(layers=layers),
    }
    mha = _("that is what plain multi-head attention would cache (full K and V per head); MLA caches the "
            "compressed latent instead.")
    hints[spec.num_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim) * layers * 2] = mha
    hints[2 * spec.num_heads * spec.v_head_dim * layers * 2] = mha
    fb = _graded(name, answer, expected, hints)
    if fb.correct:
        return right(name, _("{value} B = ({rank} + {rope}) x {layers} layers x 2 B.").format(
            value=f"{expected:,}", rank=r, rope=rope, layers=layers))
    return fb


def npu_answer(reserve: float = 0.10) -> int:
    """Fewest 64 GB NPUs that hold openPangu-718B's bf16 weights with ``reserve`` of each kept free."""
    usable = load_device("atlas-800i-a2").memory_bytes * (1 - reserve)
    return math.ceil(weight_bytes(load_model(MODEL), "bf16") / usable)


def check_min_npus(answer) -> Feedback:
    """Exercise 3: fewest 64 GB Ascend NPUs holding the bf16 weights alone, 10 % of each kept free."""
    spec = load_model(MODEL)
    count = count_parameters(spec)
    expected = npu_answer()
    usable = 64e9 * 0.9
    name = _("NPUs for the weights")
    hints = {
        npu_answer(0.0): _("you used all 64 GB of every NPU; keep 10 % free for the runtime."),
        math.floor(2 * count.total / usable): _("round up: a fraction of an NPU is a whole NPU."),
        math.ceil(2 * (count.total + count.mtp_total) / usable): _("count the main model's weights alone: the MTP "
                                                                   "module is optional at serving time (speculative "
                                                                   "decoding), and no KV cache is asked for here."),
        math.ceil(4 * count.total / usable): _("bf16 takes 2 bytes per parameter, not 4."),
    }
    fb = _graded(name, answer, expected, hints)
    if fb.correct:
        return right(name, _("{npus} NPUs: {gb} GB of weights; Huawei's reference run uses 32 (4 servers x "
                             "8).").format(npus=expected, gb=f"{weight_bytes(spec, 'bf16') / 1e9:,.0f}"))
    return fb


def scout_kv_answer() -> int:
    """KV-cache bytes of ONE Llama 4 Scout sequence of 131,072 tokens in bf16 (chunked layers keep 8192)."""
    return int(kv_cache_bytes(load_model(SCOUT), SCOUT_CONTEXT, 1, "bf16"))


def check_scout_kv_bytes(answer) -> Feedback:
    """Exercise 4: bytes of KV cache of one Llama 4 Scout sequence of 131,072 tokens in bf16."""
    spec = load_model(SCOUT)
    per_layer = kv_values_per_token_per_layer(spec) * 2  # bytes per token and layer
    layers, chunk, context = spec.num_layers, spec.attention_chunk, SCOUT_CONTEXT
    chunked = sum(spec.chunked_layers)
    full = layers - chunked
    expected = scout_kv_answer()
    name = _("Scout KV bytes")
    hints = {
        layers * per_layer * context: _("that caches all {context} tokens in every layer; the {chunked} chunked "
                                        "layers attend within chunks of {chunk} tokens, so they keep at most "
                                        "{chunk}.").format(context=f"{context:,}", chunked=chunked,
                                                           chunk=f"{chunk:,}"),
        layers * per_layer * chunk: _("that treats every layer as chunked; every 4th layer (3, 7, ...) is global "
                                      "and keeps the whole context."),
        chunked * per_layer * context + full * per_layer * chunk: _("the split is the other way round: {chunked} "
                                                                    "layers are chunked and {full} global.").format(
            chunked=chunked, full=full),
        expected // 2: _("a layer caches a key AND a value per key/value head, each value 2 bytes in bf16."),
        expected * spec.num_heads // spec.num_kv_heads: _("the cache holds the {kv_heads} key/value heads "
                                                          "(num_key_value_heads), not the {heads} query "
                                                          "heads.").format(kv_heads=spec.num_kv_heads,
                                                                           heads=spec.num_heads),
    }
    fb = _graded(name, answer, expected, hints)
    if fb.correct:
        return right(name, _("{value} B = {full} global layers x {context} tokens + {chunked} chunked layers x "
                             "{chunk} tokens, {per_layer} B per token and layer.").format(
            value=f"{expected:,}", full=full, context=f"{context:,}", chunked=chunked, chunk=f"{chunk:,}",
            per_layer=f"{per_layer:,}"))
    return fb
