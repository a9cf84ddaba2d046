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

MODEL = "openpangu-ultra-moe-718b"
SCOUT = "llama-4-scout"
SCOUT_CONTEXT = 131072


def _as_number(exercise: str, answer) -> tuple[float | None, Feedback | None]:
    missing = unanswered(exercise, answer)
    if missing is not None:  # a Feedback is falsy when wrong: compare with None
        return None, missing
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        return None, wrong(exercise, f"expected a number, got {type(answer).__name__}.")
    return float(answer), None


def _graded(exercise: str, answer, expected: float, hints: dict, rel: float = 1e-9) -> Feedback:
    """Right if ``answer`` equals ``expected``; a known mistake gets its hint; else too large/small."""
    value, problem = _as_number(exercise, answer)
    if problem is not None:
        return problem
    for wrong_value, hint in hints.items():
        if wrong_value != expected and math.isclose(value, wrong_value, rel_tol=rel):
            return wrong(exercise, f"{value:,.0f}: {hint}")
    return check_number(exercise, value, expected, rel=rel)


def expert_answer() -> int:
    """Parameters of one routed expert of openPangu-718B in one layer (3 x 7680 x 2048)."""
    return expert_params(load_model(MODEL))


def check_expert_params(answer) -> Feedback:
    """Exercise 1: how many parameters has ONE routed expert of openPangu-718B in ONE layer?"""
    spec = load_model(MODEL)
    h, f = spec.hidden_size, spec.expert_ffn_size
    expected = expert_answer()
    hints = {
        2 * h * f: "that is two projections; a SwiGLU expert has three (gate, up and down).",
        h * f: "that is one projection; a SwiGLU expert has three (gate, up and down).",
        expected * spec.num_moe_layers: f"that is one expert summed over all {spec.num_moe_layers} MoE layers; "
                                        "the question asks for one layer.",
        expected * spec.num_experts: f"that is all {spec.num_experts} routed experts of a layer; the question "
                                     "asks for one.",
    }
    fb = _graded("expert params", answer, expected, hints)
    if fb.correct:
        return right("expert params", f"{expected:,} = 3 x {h} x {f}: tiny next to the article's '100B per "
                                      "expert'.")
    return fb


def kv_answer() -> int:
    """KV-cache bytes per token of openPangu-718B in bf16: (512 + 64) x 61 x 2."""
    return kv_bytes_per_token(load_model(MODEL), "bf16")


def check_kv_bytes_per_token(answer) -> Feedback:
    """Exercise 2: bytes of KV cache one token adds to openPangu-718B in bf16 (all layers)."""
    spec = load_model(MODEL)
    r, rope, layers = spec.kv_lora_rank, spec.qk_rope_head_dim, spec.num_layers
    expected = kv_answer()
    hints = {
        r * layers * 2: f"MLA also caches the decoupled RoPE key ({rope} values per layer) next to the "
                        f"{r}-value latent.",
        (r + rope) * layers: "that is the number of cached values; each takes 2 bytes in bf16.",
        (r + rope) * 2: f"that is one layer; the model has {layers}.",
    }
    mha = "that is what plain multi-head attention would cache (full K and V per head); MLA caches the " \
          "compressed latent instead."
    hints[spec.num_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim) * layers * 2] = mha
    hints[2 * spec.num_heads * spec.v_head_dim * layers * 2] = mha
    fb = _graded("KV bytes per token", answer, expected, hints)
    if fb.correct:
        return right("KV bytes per token", f"{expected:,} B = ({r} + {rope}) x {layers} layers x 2 B.")
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
    hints = {
        npu_answer(0.0): "you used all 64 GB of every NPU; keep 10 % free for the runtime.",
        math.floor(2 * count.total / usable): "round up: a fraction of an NPU is a whole NPU.",
        math.ceil(2 * (count.total + count.mtp_total) / usable): "count the main model's weights alone: the MTP "
                                                                 "module is optional at serving time (speculative "
                                                                 "decoding), and no KV cache is asked for here.",
        math.ceil(4 * count.total / usable): "bf16 takes 2 bytes per parameter, not 4.",
    }
    fb = _graded("NPUs for the weights", answer, expected, hints)
    if fb.correct:
        return right("NPUs for the weights", f"{expected} NPUs: {weight_bytes(spec, 'bf16') / 1e9:,.0f} GB of "
                                             "weights; Huawei's reference run uses 32 (4 servers x 8).")
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
    hints = {
        layers * per_layer * context: f"that caches all {context:,} tokens in every layer; the {chunked} chunked "
                                      f"layers attend within chunks of {chunk:,} tokens, so they keep at most "
                                      f"{chunk:,}.",
        layers * per_layer * chunk: "that treats every layer as chunked; every 4th layer (3, 7, ...) is global and "
                                    "keeps the whole context.",
        chunked * per_layer * context + full * per_layer * chunk: f"the split is the other way round: {chunked} layers "
                                                                 f"are chunked and {full} global.",
        expected // 2: "a layer caches a key AND a value per key/value head, each value 2 bytes in bf16.",
        expected * spec.num_heads // spec.num_kv_heads: f"the cache holds the {spec.num_kv_heads} key/value heads "
                                                        f"(num_key_value_heads), not the {spec.num_heads} query heads.",
    }
    fb = _graded("Scout KV bytes", answer, expected, hints)
    if fb.correct:
        return right("Scout KV bytes", f"{expected:,} B = {full} global layers x {context:,} tokens + {chunked} "
                                       f"chunked layers x {chunk:,} tokens, {per_layer:,} B per token and layer.")
    return fb
