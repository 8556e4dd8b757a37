"""Post-training compression: magnitude, low-rank, node and channel pruning, ratio allocation.

Every method takes a model and a pruning ratio (one float, or a dict layer name -> ratio such
as :func:`allocate` returns) and gives a :class:`PruneResult` (model, per-layer report, the
edits needed to rebuild a physically changed architecture).
"""

from tailwise.prune.allocate import allocate, erk_densities, lamp_scores
from tailwise.prune.layers import prunable_layers
from tailwise.prune.lowrank import prune_lowrank
from tailwise.prune.rebuild import load_pruned, save_pruned
from tailwise.prune.report import PruneResult, layer_flops
from tailwise.prune.structured import prune_channels, prune_nodes
from tailwise.prune.unstructured import prune_magnitude

__all__ = [
    "PruneResult",
    "allocate",
    "erk_densities",
    "lamp_scores",
    "layer_flops",
    "load_pruned",
    "prunable_layers",
    "prune_channels",
    "prune_lowrank",
    "prune_magnitude",
    "prune_nodes",
    "save_pruned",
]
