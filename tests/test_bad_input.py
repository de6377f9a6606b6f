"""The bad-input catalogue of docs/reliability.md, one test per row: exit != 0, one line, nothing left behind."""

import hashlib
import importlib.util
import io
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_cfg, tiny

from rl_trust import checkpoint
from rl_trust.rollout import Collector
from rl_trust.train import run

BATCH = 64  # tiny(): 2 envs x 32 steps


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a script's dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def catalogue():
    text = (ROOT / "docs" / "reliability.md").read_text()
    table = text[text.index("| tool | arguments | the one line contains |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        tool, args, expected = (cell.strip() for cell in line.strip("|").split(" | "))
        rows.append((tool, args.strip("`").strip(), expected.strip("`")))
    return rows


ROWS = catalogue()


def test_the_catalogue_is_long_and_unique():
    assert len(ROWS) >= 60
    assert len({(t, a) for t, a, _ in ROWS}) == len(ROWS)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The runs and files the rows name."""
    tmp = tmp_path_factory.mktemp("bad_input")
    finished = tmp / "finished"
    run(make_cfg("env=Pendulum", *tiny(f"total_steps={4 * BATCH}", f"checkpoint.every_steps={BATCH}")), finished)
    killed = tmp / "killed"
    shutil.copytree(finished, killed)
    for path in (killed / "metrics.json", killed / "checkpoint.pt"):
        path.unlink()
    for step, path in checkpoint.step_files(killed):
        if step > 2 * BATCH:
            path.unlink()
    bare = tmp / "bare"
    (bare / ".hydra").mkdir(parents=True)
    corrupt_run = tmp / "corrupt_run"
    (corrupt_run / "checkpoints").mkdir(parents=True)
    good = (finished / "checkpoint.pt").read_bytes()
    (corrupt_run / "checkpoints" / "step_000000000064.pt").write_bytes(good[:-10])
    bare_started = tmp / "bare_started"
    bare_started.mkdir()
    shutil.copy(next(finished.glob("events.out.tfevents.*")), bare_started)
    corrupt_newest = tmp / "corrupt_newest"
    shutil.copytree(finished, corrupt_newest)
    for path in (corrupt_newest / "metrics.json", corrupt_newest / "checkpoint.pt"):
        path.unlink()
    newest = checkpoint.step_files(corrupt_newest)[-1][1]
    newest.write_bytes(newest.read_bytes()[:-7])
    files = tmp / "files"
    files.mkdir()
    (files / "empty.pt").write_bytes(b"")
    (files / "text.pt").write_text("not a checkpoint\n")
    (files / "head_truncated.pt").write_bytes(good[100:])
    (files / "truncated.pt").write_bytes(good[:-1000])
    (files / "flipped.pt").write_bytes(good[:5000] + bytes(b ^ 0x5A for b in good[5000:5004]) + good[5004:])
    torch.save(torch.zeros(3), files / "tensor.pt")
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buf)
    payload = buf.getvalue()
    (files / "no_config.pt").write_bytes(
        b"RL_TRUST-CHECKPOINT %d %d %s\n" % (checkpoint.VERSION, len(payload),
                                             hashlib.sha256(payload).hexdigest().encode()) + payload)
    events_dir = files / "events_dir"
    events_dir.mkdir()
    (events_dir / "events.out.tfevents.1.host.1.0").write_bytes(b"\x00garbage that is not a record" * 10)
    return {"tmp": str(tmp), "run": str(finished), "killed": str(killed), "bare": str(bare),
            "corrupt_run": str(corrupt_run), "bare_started": str(bare_started), "corrupt_newest": str(corrupt_newest),
            "files": files}


def fill(args: str, places) -> list[str]:
    args = re.sub(r"\{file:(\w+)\}", lambda m: str(places["files"] / (m.group(1) + ("" if m.group(1).endswith("dir")
                                                                                    else ".pt"))), args)
    return shlex.split(args.format(**{k: v for k, v in places.items() if k != "files"}))


def snapshot(places) -> dict:
    out = {}
    for key in ("run", "killed", "bare", "corrupt_run", "bare_started", "corrupt_newest", "files"):
        for path in sorted(p for p in Path(places[key]).rglob("*") if p.is_file()):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("tool, args, expected", ROWS, ids=[f"{t}:{a}" for t, a, _ in ROWS])
def test_bad_input(tool, args, expected, places, tmp_path, capsys, monkeypatch):
    def no_training(self, *a, **k):
        raise AssertionError("a bad-input row reached training")

    monkeypatch.setattr(Collector, "collect", no_training)
    argv = fill(args, places)
    before = snapshot(places)
    fresh = tmp_path / "new_run"
    if tool == "train":
        if not any(a.startswith(("hydra.run.dir=", "resume=")) for a in argv):
            argv.append(f"hydra.run.dir={fresh}")
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "train.py")])
        code = load_script("train").cli(argv)
    else:
        try:
            code = load_script(tool).main(argv)
        except SystemExit as e:
            code = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code not in (0, None), err
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert expected in err[0], err[0]
    assert not fresh.exists(), sorted(p.name for p in fresh.iterdir())
    assert not (Path(places["tmp"]) / "sweep").exists()  # a refused sweep starts no trial
    assert snapshot(places) == before
