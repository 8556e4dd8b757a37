"""Post-training compression: magnitude, low-rank, node and channel pruning, ratio allocation.

:func:`prune` is the entry point (method, allocation, protected output layers, budgets);
``prune_magnitude`` / ``prune_lowrank`` / ``prune_nodes`` / ``prune_channels`` are the methods
on their own (and ``remove_zero_channels`` takes out what structured training zeroed), each
a :class:`Pruner` run by :func:`run_pruner`. :func:`prune_file` prunes a weights file
(safetensors, Hugging Face folder, torch checkpoint) that records no architecture, by the
methods that only zero entries, tensor by tensor.

Every method takes a model and a pruning ratio (one float, or a dict layer name -> ratio such
as :func:`allocate` returns) and gives a :class:`PruneResult` (model, per-layer report, the
edits needed to rebuild a physically changed architecture).
"""

from tailwise.prune.allocate import (
    allocate,
    alpha_pruning_ratios,
    erk_densities,
    lamp_scores,
)
from tailwise.prune.files import FILE_METHODS, FilePruneResult, file_output_layers, prune_file
from tailwise.prune.layers import prunable_layers, rebuild_info
from tailwise.prune.lowrank import LowRankPruner, prune_lowrank
from tailwise.prune.pipeline import PruneMethod, find_output_layers, prune
from tailwise.prune.rebuild import load_pruned, save_pruned
from tailwise.prune.report import LayerReport, PruneResult, layer_flops
from tailwise.prune.runner import MaskPruner, Pruner, Replacement, ReplacePruner, run_pruner
from tailwise.prune.structured import (
    ZERO_CHANNEL_TOL,
    ChannelPruner,
    NodePruner,
    ZeroChannelPruner,
    prune_channels,
    prune_nodes,
    remove_zero_channels,
)
from tailwise.prune.unstructured import GlobalMagnitudePruner, MagnitudePruner, prune_magnitude

__all__ = [
    "FILE_METHODS",
    "ZERO_CHANNEL_TOL",
    "ChannelPruner",
    "FilePruneResult",
    "GlobalMagnitudePruner",
    "LayerReport",
    "LowRankPruner",
    "MagnitudePruner",
    "MaskPruner",
    "NodePruner",
    "PruneMethod",
    "PruneResult",
    "Pruner",
    "ReplacePruner",
    "Replacement",
    "ZeroChannelPruner",
    "allocate",
    "alpha_pruning_ratios",
    "erk_densities",
    "file_output_layers",
    "find_output_layers",
    "lamp_scores",
    "layer_flops",
    "load_pruned",
    "prunable_layers",
    "prune",
    "prune_channels",
    "prune_file",
    "prune_lowrank",
    "prune_magnitude",
    "prune_nodes",
    "rebuild_info",
    "remove_zero_channels",
    "run_pruner",
    "save_pruned",
]
