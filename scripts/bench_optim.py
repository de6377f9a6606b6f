"""Optimizer step time: arTuRO against torch.optim.Adam, same parameters and gradients.

    python scripts/bench_optim.py [--device cpu|cuda] [--repeats 30]

Times ``optimizer.step()`` alone (gradients fixed), alternating the optimizers in rounds so that
machine noise hits all; prints the median per step and the ratios to Adam(foreach=True). Rows:
Adam foreach, Adam fused, arTuRO (default: the fused kernel on the CPU, the eager step on CUDA), arTuRO
eager (fused=False).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from rl_trust.optim import Arturo


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def time_steps(opt: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    sync()
    return (time.perf_counter() - start) / steps


def bench(name: str, sizes: list[int], device: torch.device, repeats: int, steps: int) -> dict:
    torch.manual_seed(0)
    makers = {"adam": lambda ps: torch.optim.Adam(ps, lr=1e-6, foreach=True),
              "adam_fused": lambda ps: torch.optim.Adam(ps, lr=1e-6, fused=True),
              "arturo": lambda ps: Arturo(ps, lr=1e-6),
              "arturo_eager": lambda ps: Arturo(ps, lr=1e-6, fused=False)}
    nets = {k: mlp(sizes).to(device) for k in makers}
    for net in nets.values():
        net.load_state_dict(nets["adam"].state_dict())
    opts = {k: make(nets[k].parameters()) for k, make in makers.items()}
    for net in nets.values():
        for p in net.parameters():
            p.grad = torch.randn_like(p) * 1e-3
    for opt in opts.values():  # warm-up: state allocation, caches
        time_steps(opt, 5, device)
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(repeats):
        for k, opt in opts.items():
            times[k].append(time_steps(opt, steps, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = sum(p.numel() for p in nets["adam"].parameters())
    out = {"model": name, "params": n, "device": str(device)}
    out |= {f"{k}_us": round(v * 1e6, 1) for k, v in med.items()}
    out |= {f"{k}/adam": round(v / med["adam"], 2) for k, v in med.items() if k != "adam"}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device=cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(json.dumps(bench("critic 17-64-64-1", [17, 64, 64, 1], device, args.repeats, 20)))
    print(json.dumps(bench("mlp 3x1024", [17, 1024, 1024, 1024, 1], device, args.repeats, 3)))
    if device.type == "cuda":
        net = mlp([17, 1024, 1024, 1024, 1]).to(device)
        opt = Arturo(net.parameters(), lr=1e-3)
        for p_ in net.parameters():
            p_.grad = torch.randn_like(p_)
        opt.step()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        print(json.dumps({"sync_debug_mode_error": "passed"}))


if __name__ == "__main__":
    main()
