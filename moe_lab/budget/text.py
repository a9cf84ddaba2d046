"""How the budget writes numbers for a learner (notebook 07, ``python -m moe_lab budget``): integers in full
with thousands separators, a range only when its ends differ (singular and plural: ``moe_lab.textfmt.plural``).

    span(836.3, 1115.1) -> "836-1,115";  span(116.64, 116.61, 1) -> "116.6"
"""

from __future__ import annotations


def span(low: float, high: float, digits: int = 0) -> str:
    """``low-high`` with thousands separators, or one number when both ends round to the same text."""
    a, b = f"{low:,.{digits}f}", f"{high:,.{digits}f}"
    return a if a == b else f"{a}-{b}"


def kv_growth_text(growth) -> str:
    """``((None, 70272),)`` -> ``70,272 B per token``; ``((128, 73728), (None, 36864))`` ->
    ``73,728 B per token up to 128 tokens, then 36,864 B`` (the segments of ``memory.kv_growth``)."""
    parts = []
    for i, (up_to, nbytes) in enumerate(growth):
        text = f"{nbytes:,} B" + (" per token" if i == 0 else "")
        if up_to is not None:
            text += f" up to {up_to:,} tokens"
        parts.append(text)
    return ", then ".join(parts)
