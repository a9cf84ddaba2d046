"""The tiny byte-level MoE language model (notebooks 04-05): corpus, model, training, checkpoint,
routing of a text, and ``python -m moe_lab checkpoint``.

The names notebooks use are importable from here: ``from moe_lab.lm import LMConfig, TinyMoELM, train``.
"""

from moe_lab.lm.checkpoint import CHECKPOINT_CONFIG, CHECKPOINT_DIR, load_checkpoint, load_tiny_lm, save_checkpoint
from moe_lab.lm.corpus import DOMAINS, load_corpus
from moe_lab.lm.model import LMConfig, TinyMoELM
from moe_lab.lm.routes import TextRouting, domain_expert_counts, route_text, route_text_batched
from moe_lab.lm.training import Trainer, TrainResult, domain_expert_share, evaluate, router_gradient_norms, train

__all__ = ["CHECKPOINT_CONFIG", "CHECKPOINT_DIR", "DOMAINS", "LMConfig", "TextRouting", "TinyMoELM", "TrainResult",
           "Trainer", "domain_expert_counts", "domain_expert_share", "evaluate", "load_checkpoint", "load_corpus",
           "load_tiny_lm", "route_text", "route_text_batched", "router_gradient_norms", "save_checkpoint", "train"]
