"""A small supervised check of arTuRO against Adam: scikit-learn's digits with an MLP.

    python scripts/bench_digits.py [--epochs 30] [--seeds 0 1 2] [--arturo-lr 0.0857] [--adam-lr 1e-3]

The 8x8 digit images (bundled with scikit-learn, no download) are split 75/25 (stratified, fixed);
an MLP 64-128-128-10 (ReLU) trains with cross-entropy on 32-sample minibatches, the same
initialisation and minibatch order for both optimizers; prints test accuracy per seed and the mean.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

from rl_trust.optim import Arturo


def data(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=seed)
    f = lambda a: torch.tensor(a, dtype=torch.float32)
    return f(xtr), torch.tensor(ytr), f(xte), torch.tensor(yte)


def train(make_opt, seed: int, epochs: int, batch: int, splits) -> float:
    xtr, ytr, xte, yte = splits
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = make_opt(net.parameters())
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(batch):
            def closure(idx=idx):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
                loss.backward()
                return loss
            opt.step(closure)
    with torch.no_grad():
        return float((net(xte).argmax(-1) == yte).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arturo-lr", type=float, default=0.0857,
                   help="arTuRO's KL bound (default: the paper's Fashion-MNIST value, with its other settings)")
    p.add_argument("--adam-lr", type=float, default=1e-3)
    args = p.parse_args()
    if args.epochs < 1 or args.batch < 1:
        p.error("--epochs and --batch must be >= 1")
    torch.set_num_threads(1)
    splits = data()
    optims = {"adam": lambda ps: torch.optim.Adam(ps, lr=args.adam_lr),
              "arturo": lambda ps: Arturo(ps, lr=args.arturo_lr, weight_decay=1.54e-6)}
    acc = {name: [train(make, s, args.epochs, args.batch, splits) for s in args.seeds] for name, make in optims.items()}
    for name, values in acc.items():
        print(json.dumps({"optim": name, "test_accuracy": values, "mean": statistics.mean(values)}))
    print(f"arturo - adam = {100 * (statistics.mean(acc['arturo']) - statistics.mean(acc['adam'])):+.2f} points")


if __name__ == "__main__":
    main()
