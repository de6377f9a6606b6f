"""The checkpoint file format: atomic, checksummed, refused with one line when damaged; env states."""

import hashlib
import io
import os
import stat
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_trust import checkpoint
from rl_trust.envs import env_state, restore_env
from rl_trust.errors import CheckpointError

STATE = {"actor": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"seed": 0}, "step": 3,
         "arr": np.linspace(0, 1, 5)}


def test_round_trip_and_mode(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, STATE)
    assert checkpoint.differences(checkpoint.load(path), STATE) == []
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # as any file the run writes
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"", "empty"),
    (lambda b: b"hello, I am a text file\n", "not an rl_trust checkpoint"),
    (lambda b: b[:200] + bytes(x ^ 0xFF for x in b[200:204]) + b[204:], "corrupt"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "corrupt"),
    (lambda b: b.replace(b"RL_TRUST-CHECKPOINT %d" % checkpoint.VERSION, b"RL_TRUST-CHECKPOINT 9", 1), "format 9"),
    (lambda b: b.split(b"\n", 1)[0][:-3] + b"\n" + b.split(b"\n", 1)[1], "corrupt"),
])
def test_damaged_files_are_refused_with_one_line(tmp_path, damage, message):
    path = tmp_path / "c.pt"
    checkpoint.save(path, STATE)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)


def test_foreign_files_are_refused(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="plain torch.save file"):
        checkpoint.load(tmp_path / "tensor.pt")
    buf = io.BytesIO()
    torch.save([1, 2], buf)  # a valid header and checksum around something that is not a run's state
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    header = b"RL_TRUST-CHECKPOINT %d %d %s\n" % (checkpoint.VERSION, len(payload), digest)
    (tmp_path / "list.pt").write_bytes(header + payload)
    with pytest.raises(CheckpointError, match="holds a list"):
        checkpoint.load(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="directory without checkpoints"):
        checkpoint.load(tmp_path)


def test_load_latest_skips_a_damaged_newest_file(tmp_path):
    keeper = checkpoint.Checkpointer(tmp_path, every_steps=10, keep=5)
    keeper.save(10, {"global_step": 10})
    newest = keeper.save(20, {"global_step": 20})
    newest.write_bytes(newest.read_bytes()[:-5])
    state, path, skipped = checkpoint.load_latest(tmp_path)
    assert state["global_step"] == 10 and len(skipped) == 1 and "truncated" in skipped[0][1]


def test_leftover_temporary_files_are_removed_on_start(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stray = tmp_path / "checkpoints" / ".step_000000000010.pt.tmp-12345"
    stray.write_bytes(b"half a checkpoint")
    checkpoint.Checkpointer(tmp_path, every_steps=10, keep=1)
    assert not stray.exists()


def test_due_at_interval_crossings():
    keeper = checkpoint.Checkpointer.__new__(checkpoint.Checkpointer)
    keeper.every = 100
    assert [s for s in range(64, 640, 64) if keeper.due(s - 64, s)] == [128, 256, 320, 448, 512]
    keeper.every = 0
    assert not keeper.due(0, 10_000)


def test_differences_finds_a_changed_bit():
    other = {"actor": {"w": STATE["actor"]["w"].clone()}, "config": {"seed": 0}, "step": 3,
             "arr": STATE["arr"].copy()}
    assert checkpoint.differences(STATE, other) == []
    other["actor"]["w"][1, 2] = torch.nextafter(other["actor"]["w"][1, 2], torch.tensor(100.0))
    other["arr"][0] = 1e-300
    assert checkpoint.differences(STATE, other) == ["state.actor.w", "state.arr"]


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5",
                                    "Pendulum-v1", "CartPole-v1", "MountainCarContinuous-v0", "Acrobot-v1"])
def test_saved_envs_continue_exactly(env_id):
    """The restored env steps and resets exactly as the original, mid-episode and across resets."""
    env = gym.make(env_id)
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(25):
        if any(env.step(env.action_space.sample())[2:4]):
            env.reset()
    copy = restore_env(env_state(env))
    env.action_space.seed(4)
    resets = 0
    for _ in range(1500):
        action = env.action_space.sample()
        a, b = env.step(action), copy.step(action)
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4]
        if a[2] or a[3]:
            resets += 1
            assert np.array_equal(env.reset()[0], copy.reset()[0])
    assert resets > 0 or env_id in ("HalfCheetah-v5",)  # episodes ended and restarted alike


def test_an_env_that_cannot_be_saved_says_why():
    import faulty_envs  # noqa: F401 - registers the envs

    with pytest.raises(TypeError, match="cannot be pickled"):
        env_state(gym.make("Unpicklable-v0"))


def test_a_run_directory_takes_one_process(tmp_path):
    with checkpoint.lock(tmp_path):
        code = ("import sys; from rl_trust import checkpoint\n"
                "try:\n    checkpoint.lock(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(e); sys.exit(3)")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert proc.returncode == 3 and "another process is training" in proc.stdout
    with checkpoint.lock(tmp_path):  # released, so it can be taken again
        pass


def test_load_schedule_replans_an_extended_horizon():
    from rl_trust.optim.schedule import linear_decay, load_schedule

    def scheduler(total):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        return opt, linear_decay(opt, total)

    opt, sched = scheduler(10)
    for _ in range(5):
        opt.step()
        sched.step()
    same_opt, same = scheduler(10)
    load_schedule(same, sched.state_dict())
    assert same_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]  # bit for bit
    longer_opt, longer = scheduler(20)
    load_schedule(longer, sched.state_dict())
    assert longer_opt.param_groups[0]["lr"] == pytest.approx(0.3 * (1 - 5 / 20))
