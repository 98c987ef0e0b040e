"""Transforms applied to a model before quantization (rotations, FlatQuant)."""
