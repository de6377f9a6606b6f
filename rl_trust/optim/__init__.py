"""Optimizers."""

from rl_trust.optim.arturo import Arturo
from rl_trust.optim.muon import MuonAdam

__all__ = ["Arturo", "MuonAdam"]
