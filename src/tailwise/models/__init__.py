"""Architectures the sources use, defined here (no torchvision)."""

from tailwise.models.cnn import SmallCNN
from tailwise.models.mlp import MLP
from tailwise.models.reference import reference_checkpoint, reference_metadata, reference_model

__all__ = ["MLP", "SmallCNN", "reference_checkpoint", "reference_metadata", "reference_model"]
