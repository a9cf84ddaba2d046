"""Decode speed of an MoE model, as a roofline: bytes read and FLOPs per generated token (notebook 07).

Introduced in notebook 07, after the serving budget of ``moe_lab.budget.memory``.

* Decode roofline: a decode step reads the weights it touches and the whole KV cache once; each token
  does ``2 x active`` FLOPs in the weights (input embedding excluded: a row lookup) plus the attention
  over its cached tokens (``decode_flops_per_token``). Time >= max(bytes / bandwidth, FLOPs / peak): the
  tokens/s bound is the smaller of the memory and the compute bound, and the roofline says which one
  binds. With a batch of ``B`` tokens an MoE layer touches ``E (1 - (1 - k/E)^B)`` distinct experts on
  average (uniform routing). A batch whose budget does not fit the devices is refused (``max_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_lab.budget.count import count_parameters
from moe_lab.budget.hardware import Device
from moe_lab.budget.memory import GB, check_batch_fits, kv_cache_bytes, kv_cached_tokens, weight_bytes_by_component
from moe_lab.budget.spec import ModelSpec
from moe_lab.checks import check_int


def expected_distinct_experts(num_experts: int, top_k: int, tokens: int) -> float:
    """Experts a layer touches for ``tokens`` tokens routed uniformly: ``E (1 - (1 - k/E)^T)``."""
    e = check_int("num_experts", num_experts, minimum=1)
    k = check_int("top_k", top_k, minimum=0, maximum=e)
    t = check_int("tokens", tokens, minimum=0)
    return e * (1.0 - (1.0 - k / e) ** t)


def decode_bytes_per_step(spec: ModelSpec, dtype: str, context: int, batch: int, kv_dtype: str = "bf16") -> float:
    """Bytes one decode step reads: touched weights (input embedding excluded) + the whole KV cache."""
    comps = weight_bytes_by_component(spec, dtype)
    read = sum(v for k, v in comps.items() if k not in ("embedding", "routed_experts"))
    if spec.num_moe_layers:
        per_expert = comps["routed_experts"] / (spec.num_moe_layers * spec.num_experts)
        read += spec.num_moe_layers * expected_distinct_experts(spec.num_experts, spec.top_k, batch) * per_expert
    return read + kv_cache_bytes(spec, context, batch, kv_dtype)


def attention_flops_per_cached_token(spec: ModelSpec) -> int:
    """FLOPs one new token spends on one cached token in one layer (scores and weighted values).

    GQA: ``2 n d`` for ``q k`` and ``2 n d`` for ``p v``. MLA decodes in its absorbed form (DeepSeek-V2
    paper: ``W_UK`` absorbed into the query, ``W_UV`` into the output, so attention runs on the cached
    latent): ``2 n (r_kv + d_rope)`` for the scores and ``2 n r_kv`` for the values.
    """
    n = spec.num_heads
    if spec.attention == "mla":
        return 2 * n * (spec.kv_lora_rank + spec.qk_rope_head_dim) + 2 * n * spec.kv_lora_rank
    return 4 * n * spec.head_dim


def decode_flops_per_token(spec: ModelSpec, context: int) -> float:
    """FLOPs of one decode token at ``context``: ``2 x active`` weights (input embedding excluded) plus its
    attention over the tokens every layer keeps (``kv_cached_tokens``)."""
    weights = 2.0 * count_parameters(spec).active_without_embedding
    return weights + attention_flops_per_cached_token(spec) * sum(kv_cached_tokens(spec, context))


@dataclass(frozen=True)
class Roofline:
    """Decode-speed upper bounds; ``(low, high)`` follow the hardware ranges.

    ``memory_tokens_per_second``: the bound of bandwidth; ``compute_tokens_per_second``: the bound of peak
    FLOPs (``None`` when the device's TFLOPS are not verified); ``tokens_per_second``: the smaller,
    and ``bound`` says which one binds ("memory", "compute", or "memory or compute" when the two ends of
    the hardware ranges disagree); without verified TFLOPS only the memory bound is known.
    """

    devices: int
    batch: int
    bytes_per_step: float
    flops_per_step: float
    memory_tokens_per_second: tuple[float, float]
    compute_tokens_per_second: tuple[float, float] | None
    bound: str

    @property
    def tokens_per_second(self) -> tuple[float, float]:
        if self.compute_tokens_per_second is None:
            return self.memory_tokens_per_second
        return (min(self.memory_tokens_per_second[0], self.compute_tokens_per_second[0]),
                min(self.memory_tokens_per_second[1], self.compute_tokens_per_second[1]))

    @property
    def per_sequence_tokens_per_second(self) -> tuple[float, float]:
        low, high = self.tokens_per_second
        return low / self.batch, high / self.batch

    @property
    def step_seconds(self) -> tuple[float, float]:
        """(fast, slow) time of one decode step."""
        low, high = self.tokens_per_second
        return self.batch / high, self.batch / low


def decode_roofline(spec: ModelSpec, device: Device, devices: int, dtype: str = "bf16", context: int = 4096,
                    batch: int = 1, kv_dtype: str = "bf16", reserve: float = 0.10) -> Roofline:
    """Upper bound on decode speed of ``devices`` devices working perfectly in parallel.

    A batch whose serving budget does not fit those devices is refused (``check_batch_fits``).
    """
    devices = check_int("devices", devices, minimum=1)
    if device.bandwidth_gbps is None:
        raise ValueError(f"device {device.name!r} has no verified memory bandwidth")
    check_batch_fits(spec, device, devices, batch, dtype, context, kv_dtype, reserve)
    nbytes = decode_bytes_per_step(spec, dtype, context, batch, kv_dtype)
    flops = batch * decode_flops_per_token(spec, context)
    bw_low, bw_high = device.bandwidth_gbps
    memory = (batch * devices * bw_low * GB / nbytes, batch * devices * bw_high * GB / nbytes)
    compute = None
    if device.tflops:
        compute = (batch * devices * device.tflops[0] * 1e12 / flops, batch * devices * device.tflops[1] * 1e12 / flops)
    if compute is None:
        bound = "memory"
    else:
        ends = {"memory" if memory[i] <= compute[i] else "compute" for i in (0, 1)}
        bound = ends.pop() if len(ends) == 1 else "memory or compute"
    return Roofline(devices, batch, nbytes, flops, memory, compute, bound)
