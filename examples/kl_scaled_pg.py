"""A user's own updater, complete: the policy gradient scaled to a KL bound (docs/extending.md).

TRPO without the conjugate gradient: step along the surrogate's plain gradient g, sized so that the
quadratic model of the mean KL, ½ s'Fs, equals ``max_kl``, then backtrack until the exact mean KL is
within the bound and the surrogate improves. Built only from rl_trust's public pieces.

    PYTHONPATH=examples python scripts/train.py env=Pendulum algo=custom \
        algo._target_=kl_scaled_pg.KLScaledPolicyGradient +algo.max_kl=0.02
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from rl_trust.errors import ConfigError
from rl_trust.updaters.common import mean_kl, normalize, policy_data, policy_shift, surrogate
from rl_trust.updaters.trust_region import backtracking_line_search


@dataclass
class Config:
    """The settings, as ``algo.<key>`` on the command line (checked against these types before the run)."""

    max_kl: float = 0.01
    backtrack_coeff: float = 0.8
    max_backtracks: int = 10


class KLScaledPolicyGradient:
    Config = Config

    @staticmethod
    def validate(cfg: Config, batch_size: int) -> None:
        """Value checks, run before anything is written: one ConfigError line naming the key."""
        if not cfg.max_kl > 0:
            raise ConfigError(f"algo.max_kl={cfg.max_kl} is invalid: must be > 0")
        if not 0 < cfg.backtrack_coeff < 1:
            raise ConfigError(f"algo.backtrack_coeff={cfg.backtrack_coeff} is invalid: must lie in (0, 1)")

    def __init__(self, actor, cfg: Config, *, total_updates: int, seed: int):
        self.actor, self.cfg = actor, cfg

    def update(self, batch) -> dict[str, float]:
        data = policy_data(batch, self.actor)
        data = dataclasses.replace(data, advantages=normalize(data.advantages))
        params, cache = self.actor.forward_cached(data.obs)
        surr, _ = surrogate(self.actor, params, data)
        grad = torch.cat([g.reshape(-1) for g in self.actor.gradients(cache, surr.grad)])
        if not torch.isfinite(grad).all():
            raise FloatingPointError("the surrogate's gradient is not finite")  # the run's guard undoes it
        gFg = float(grad.dot(self.actor.fisher_product(data.obs, damping=1e-8)(grad)))
        if gFg <= 0:
            return {}
        step = math.sqrt(2 * self.cfg.max_kl / gFg) * grad

        def evaluate():
            now = self.actor(data.obs)
            return surrogate(self.actor, now, data)[0].value, mean_kl(self.actor, data.old_params, now).value

        result = backtracking_line_search(
            list(self.actor.parameters()), step, evaluate, surrogate_before=float(surr.value),
            expected_improvement=float(grad.dot(step)), max_kl=self.cfg.max_kl,
            backtrack_coeff=self.cfg.backtrack_coeff, max_backtracks=self.cfg.max_backtracks)
        return {"trust_region/backtracks": float(result.backtracks),
                "trust_region/line_search_accepted": float(result.accepted)} | policy_shift(self.actor, data)

    def state_dict(self) -> dict:
        return {}  # nothing beyond the actor's parameters, which the run saves

    def load_state_dict(self, state: dict) -> None:
        pass
