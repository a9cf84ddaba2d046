"""Looking inside the tiny MoE language model: how it routes a text, and which domains reach which expert.

Introduced in notebook 05 (routing visualisation); its dashboards call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor

from moe_lab.checks import check_int
from moe_lab.lm.corpus import DOMAINS, encode
from moe_lab.lm.model import TinyMoELM


@dataclass
class TextRouting:
    """How the model routed every byte of a text.

    tokens   [T] uint8          the bytes of the text (UTF-8)
    indices  [layers, T, K]     chosen experts per layer and byte, best first
    weights  [layers, T, K]     their combine weights
    probs    [layers, T, E]     the full router distribution
    """

    text: str
    tokens: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    probs: np.ndarray

    def top1(self) -> np.ndarray:
        """``[layers, T]``: the first-choice expert of every byte."""
        return self.indices[..., 0]


def route_text(model: TinyMoELM, text: str) -> TextRouting:
    """Route ``text`` through ``model``: each layer's expert indices and weights for every byte.

    Texts longer than the model's context are cut into windows of ``context`` bytes (each window
    sees only its own bytes). Introduced in notebook 05.
    """
    tokens = encode(text)
    if tokens.size == 0:
        raise ValueError("text must not be empty")
    ctx = model.cfg.context
    parts = {"indices": [], "weights": [], "probs": []}
    for start in range(0, tokens.size, ctx):
        window = tokens[start:start + ctx].astype(np.int32)[None, :]
        _, _, probs, indices, weights = model(Tensor(window, ms.int32))
        parts["indices"].append(np.stack([a.asnumpy() for a in indices]))
        parts["weights"].append(np.stack([a.asnumpy() for a in weights]))
        parts["probs"].append(np.stack([a.asnumpy() for a in probs]))
    joined = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    return TextRouting(text, tokens, joined["indices"].astype(np.int64), joined["weights"], joined["probs"])


def route_text_batched(model, text: str):
    """``route_text`` in one model call: the same ``TextRouting``, faster for a dashboard.

    The text is cut into windows of ``context`` bytes exactly like ``route_text`` does; the last
    window is padded with zero bytes to the full context and all windows run as one batch. Attention
    is causal, so padding *after* a byte never changes how that byte is routed (a test checks the
    result equals ``route_text``). MindSpore on CPU runs the full-context shape several times faster
    than a new short shape. Introduced in notebook 05.
    """
    tokens = encode(text)
    if tokens.size == 0:
        raise ValueError("text must not be empty")
    ctx = model.cfg.context
    windows = -(-tokens.size // ctx)
    padded = np.zeros(windows * ctx, np.int32)
    padded[: tokens.size] = tokens
    _, _, probs, indices, weights = model(ms.Tensor(padded.reshape(windows, ctx), ms.int32))

    def per_byte(parts):  # tuple over layers of [windows * ctx, ...] -> [layers, T, ...]
        return np.stack([p.asnumpy()[: tokens.size] for p in parts])

    return TextRouting(text, tokens, per_byte(indices).astype(np.int64), per_byte(weights), per_byte(probs))


def domain_expert_counts(model, corpus, *, windows_per_domain: int = 8, split: str = "val",
                         first_choice: bool = False, seed: int = 0) -> np.ndarray:
    """``[layers, domains, E]``: token slots of each domain sent to each expert.

    All top-k slots (the load), or only first choices with ``first_choice=True`` (the specialisation
    measure of notebook 04, ``moe_lab.lm.training.domain_expert_share``). Uses ``windows_per_domain`` random
    windows of ``context`` bytes per domain of ``corpus`` (validation part by default: text the
    model never trained on), all in one model call. Introduced in notebook 05.
    """
    windows_per_domain = check_int("windows_per_domain", windows_per_domain, minimum=1)
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    blocks = [corpus.batch(split, windows_per_domain, cfg.context, rng, domains=(d,))[0] for d in DOMAINS]
    _, _, _, indices, _ = model(ms.Tensor(np.concatenate(blocks), ms.int32))
    counts = np.zeros((cfg.num_hidden_layers, len(DOMAINS), cfg.num_experts), np.int64)
    for layer, idx in enumerate(indices):
        idx = idx.asnumpy()
        per_domain = (idx[:, :1] if first_choice else idx).reshape(len(DOMAINS), -1)
        for d in range(len(DOMAINS)):
            counts[layer, d] = np.bincount(per_domain[d], minlength=cfg.num_experts)
    return counts
