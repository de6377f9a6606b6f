"""A slow, obviously-right arTuRO: per-tensor state, float64, η by bisection to 1e-12 relative.

Written straight from ../shared/ARTURO.md (with rl_trust's curvature floor and per-group bound),
only for testing the fast implementation.
"""

import torch


class ReferenceArturo:
    def __init__(self, params, *, lr, reg_weight, prior_prec, var_init, measurement_noise, dynamic_model_noise,
                 start_filter_cov, curvature_init, nu, weight_decay, min_curvature):
        self.params = list(params)
        self.h = dict(lr=lr, reg=reg_weight, prior=prior_prec, r=measurement_noise, q=dynamic_model_noise, nu=nu,
                      wd=weight_decay, floor=min_curvature)
        self.state = []
        for p in self.params:
            z = torch.zeros(p.numel(), dtype=torch.float64)
            self.state.append({"prec": z + 1 / var_init, "a": z + curvature_init, "b": None,
                               "P00": z + start_filter_cov, "P01": z.clone(), "P11": z + start_filter_cov})
        self.eta = self.kl = None

    def step(self):
        h = self.h
        mus, cs, ds = [], [], []
        for p, st in zip(self.params, self.state, strict=True):
            mu = p.detach().reshape(-1).double().clone()
            g = p.grad.reshape(-1).double()
            mu = mu - h["lr"] * h["wd"] * mu
            if st["b"] is None:
                st["b"] = g.clone()
            st["P00"] = st["P00"] + h["q"]
            st["P11"] = st["P11"] + h["q"]
            new = {}
            for i in range(mu.numel()):
                P00, P01, P11 = st["P00"][i].item(), st["P01"][i].item(), st["P11"][i].item()
                m, a, b = mu[i].item(), st["a"][i].item(), st["b"][i].item()
                k0, k1 = P00 + P01 * m, P01 + P11 * m
                S = k0 + k1 * m + h["r"]
                K0, K1 = k0 / S, k1 / S
                delta = g[i].item() - (a * m + b)
                new.setdefault("b", []).append(b + K0 * delta)
                new.setdefault("a", []).append(a + K1 * delta)
                new.setdefault("P00", []).append(P00 - K0 * K0 * S)
                new.setdefault("P01", []).append(P01 - K0 * K1 * S)
                new.setdefault("P11", []).append(P11 - K1 * K1 * S)
            for k, v in new.items():
                st[k] = torch.tensor(v, dtype=torch.float64)
            abar = st["a"].clamp(min=h["floor"])
            mus.append(mu)
            ds.append(abar + h["reg"] * h["prior"])
            cs.append(abar * mu + st["b"] + h["reg"] * h["prior"] * mu)
        precs = [st["prec"] for st in self.state]

        def kl(eta):
            return sum(0.5 * (pr * (c / (d + eta * pr)) ** 2).sum().item()
                       for c, d, pr in zip(cs, ds, precs, strict=True))

        eps = h["lr"]
        if kl(0.0) <= eps:
            eta = 0.0
        else:
            lo, hi = 0.0, 1.0
            while kl(hi) > eps:
                hi *= 2
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if kl(mid) > eps else (lo, mid)
                if hi - lo <= 1e-12 * hi:
                    break
            eta = hi
        self.eta, self.kl = eta, kl(eta)
        for p, st, mu, c, d in zip(self.params, self.state, mus, cs, ds, strict=True):
            new_mu = mu - c / (d + eta * st["prec"])
            st["prec"] = (d + h["nu"] * st["prec"]) / (h["reg"] + h["nu"])
            with torch.no_grad():
                p.copy_(new_mu.view_as(p).to(p.dtype))
