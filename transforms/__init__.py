"""Transforms: Hadamard construction, rotations, and fusing them into a model."""

from .fuse import apply_transform, check_transform
from .rotation import TRANSFORM_CLASSES, DenseRotation, HadamardRotation, Rotation, make_rotation

__all__ = ["TRANSFORM_CLASSES", "DenseRotation", "HadamardRotation", "Rotation", "apply_transform",
           "check_transform", "make_rotation"]
