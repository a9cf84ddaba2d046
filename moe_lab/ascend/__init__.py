"""Ascend NPUs (notebook 08): host signals and backend detection, the NumPy reference operators of
MindSpore's compiled MoE operators, and the fused dispatch path. Imported by the core (the default dispatch
path depends on the detected board), and importing nothing of it."""
