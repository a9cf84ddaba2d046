"""The MoE block and everything that runs it (notebooks 01-03): experts, routers, the layer, its dispatch
paths, capacity, the compiled path, the independent NumPy reference and parameter counts."""
