"""MoE Lab: small, readable MindSpore and NumPy helpers for the MoE course notebooks.

The core (notebook 01): ``Expert``/``Experts``, ``TopKRouter``, ``MoELayer``, ``count_params``.
Later notebooks import their own modules (``moe_lab.capacity``, ``moe_lab.balance``, ``moe_lab.budget`` ...).
"""

from moe_lab.env import setup  # first: sets GLOG_v before MindSpore logs anything
from moe_lab.expert import Expert, Experts
from moe_lab.layer import MoELayer
from moe_lab.params import ParamCount, count_params, moe_layer_params
from moe_lab.router import Routing, TopKRouter

__version__ = "0.1.0"

__all__ = ["Expert", "Experts", "MoELayer", "ParamCount", "Routing", "TopKRouter", "count_params",
           "moe_layer_params", "setup", "__version__"]
