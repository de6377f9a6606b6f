"""What the command-line scripts share."""

from __future__ import annotations

import argparse
import sys

import torch


def one_torch_thread() -> None:
    """Torch on one thread, as training runs (``torch_threads=1``): these networks are too small for intra-op
    threads to pay, and with two, a fresh process's first batched forward has come out wrong in the 4th digit
    for a row now and then (docs/architecture.md)."""
    torch.set_num_threads(1)


class Parser(argparse.ArgumentParser):
    """``argparse`` with its errors on one line (``error: <prog>: <what>``), exit code 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
