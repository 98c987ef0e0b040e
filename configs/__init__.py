"""Recipes and named presets."""

from .presets import QBITS_CONFIGS, qbits_recipe
from .recipe import METHODS, TRANSFORMS, QuantRecipe, RunConfig

__all__ = ["METHODS", "QBITS_CONFIGS", "TRANSFORMS", "QuantRecipe", "RunConfig", "qbits_recipe"]
