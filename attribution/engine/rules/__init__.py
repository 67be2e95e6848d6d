"""The per-layer rule registry: one module per layer type, each registering itself."""

from royalty.attribution.engine.rules import conv2d, embedding, groupnorm, layernorm, linear  # noqa: F401
from royalty.attribution.engine.rules.base import RULES, Built, Dense, Factored, Patches, PerSample, rule_for

__all__ = ["RULES", "Built", "Dense", "Factored", "Patches", "PerSample", "rule_for"]
