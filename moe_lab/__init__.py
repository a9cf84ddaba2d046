"""MoE Lab: small, readable MindSpore and NumPy helpers for the MoE course notebooks.

The block (notebooks 01-02): ``Expert``/``Experts``/``SharedExperts``, the routers (``SoftmaxRouter``,
``SigmoidRouter``), ``MoELayer`` (``from_config``, ``load_checkpoint_weights``), ``count_params``.
Later notebooks import their subpackages: ``moe_lab.core`` (dispatch, capacity, compiled paths, NumPy
reference), ``moe_lab.balance``, ``moe_lab.lm``, ``moe_lab.viz``, ``moe_lab.parallel``, ``moe_lab.budget``,
``moe_lab.ascend``.
"""

from moe_lab.env import repo_path, setup  # first: decides MindSpore's log level before MindSpore is imported

# isort: split
from moe_lab.core.experts import Expert, Experts, SharedExperts
from moe_lab.core.layer import MoELayer
from moe_lab.core.params import ParamCount, count_params, moe_layer_params
from moe_lab.core.routers import Router, Routing, SigmoidRouter, SoftmaxRouter

__version__ = "0.2.0"

__all__ = ["Expert", "Experts", "MoELayer", "ParamCount", "Router", "Routing", "SharedExperts", "SigmoidRouter",
           "SoftmaxRouter", "count_params", "moe_layer_params", "repo_path", "setup", "__version__"]
