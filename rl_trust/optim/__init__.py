"""Optimizers."""

from rl_trust.optim.arturo import Arturo

__all__ = ["Arturo"]
