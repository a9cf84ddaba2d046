"""Benchmarks of MoE Lab (run with ``python -m benchmarks.moe_bench`` or ``make bench``)."""
