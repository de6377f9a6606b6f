"""scripts/benchmark_table.py: runs grouped by (task, updater) from their configs, the table's statistics against
direct computation, the docs block replaced in place, and the refusals that keep a row one config's seeds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean
from test_bad_input import load_script
from torch.utils.tensorboard import SummaryWriter


def fake_run(path, algo, env_id, seed, final=None, minutes=10.0, lr=0.001, tag="charts/episodic_return",
             tuned="null", cpus=()):
    path.mkdir(parents=True)
    if cpus:  # machine.json: one entry per process that trained the run
        (path / "machine.json").write_text(json.dumps([
            {"from_step": i * 1000, "cpu": cpu} if cpu is None else
            {"from_step": i * 1000, "cpu": cpu, "cpus": 2, "python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6",
             "gymnasium": "1.4.0", "mujoco": "3.3.7", "device": "cpu"}
            for i, cpu in enumerate(cpus)]))
    with SummaryWriter(str(path)) as w:
        for step in range(20):
            w.add_scalar(tag, final or 0.0 * step, (step + 1) * 50_000)
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text(
        f"algo:\n  name: {algo}\n  lr: {lr}\nenv:\n  id: {env_id}\nseed: {seed}\nprogress: false\n"
        f"total_steps: 1000000\ntuned:\n  file: {tuned}\n")
    if final is not None:
        (path / "metrics.json").write_text(json.dumps(
            {"eval/mean_return": final, "train/time_s": minutes * 30, "train/global_step": 500_000}))


@pytest.fixture
def table():
    return load_script("benchmark_table")


def _row(text, task, updater):
    return next(line for line in text.splitlines() if line.startswith(f"| {task} | {updater} |"))


def test_rows_per_task_and_updater_against_direct_computation(tmp_path, table, capsys):
    finals = {"trpo": [3500.0, 3700.0, 3650.0, 1200.0], "ppo": [2000.0, 2500.0, 3000.0]}
    # where each seed ran (per process); ppo's seed 2 moved, seed 1 was begun by a version that recorded nothing
    cpus = {"trpo": [["Xeon"], ["EPYC"], ["Xeon"], ["Xeon"]], "ppo": [["EPYC"], [None, "EPYC"], ["EPYC", "Xeon"]]}
    for algo, values in finals.items():
        for seed, v in enumerate(values):
            fake_run(tmp_path / "runs" / f"{algo}_Hopper" / f"s{seed}", algo, "Hopper-v5", seed, v, minutes=4 + seed,
                     cpus=cpus[algo][seed])
    fake_run(tmp_path / "runs" / "ppo_Hopper" / "s9", "ppo", "Hopper-v5", 9)  # stopped: not drawn
    fake_run(tmp_path / "runs" / "ppo_Hopper" / "s8", "ppo", "Hopper-v5", 8)  # still training: not drawn
    lock = tmp_path / "runs" / "ppo_Hopper" / "s8" / ".lock"
    lock.touch()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); time.sleep(120)", str(lock)],
                              stdout=subprocess.PIPE)
    holder.stdout.readline()  # the lock is held
    fake_run(tmp_path / "runs" / "kl_penalty_Ant" / "s0", "kl_penalty", "Ant-v5", 0, 5100.0)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n<!-- benchmark-table:begin -->\nstale\n<!-- benchmark-table:end -->\n\nafter\n")
    try:
        assert table.main([str(tmp_path / "runs"), "--docs", str(docs), "--figures", str(tmp_path / "fig"),
                           "--reps", "300"]) == 0
    finally:
        holder.kill()
        holder.wait()
    text = docs.read_text()
    assert "stale" not in text and text.startswith("# Benchmarks\n") and text.endswith("\n\nafter\n")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[:2] for line in lines[1:]] == [["| Hopper", "TRPO"], ["| Hopper", "PPO-clip"],
                                                            ["| Ant", "KL-penalty"]]  # the task order
    trpo = _row(text, "Hopper", "TRPO").split(" | ")
    values = finals["trpo"]
    assert trpo[2] == "4" and trpo[3] == f"{np.mean(values):.0f} ± {np.std(values):.0f}"
    assert trpo[4].startswith(f"{trim_mean(values, 0.25):.0f} [")
    assert trpo[5] == "0: 3500 1: 3700 2: 3650 3: 1200"
    assert trpo[6] == "5.5"  # the median of 4, 5, 6, 7 minutes per 1M steps
    assert trpo[7] == "M1, M2" and trpo[10].startswith("no")  # mean 3012 < 3600
    ppo = _row(text, "Hopper", "PPO-clip").split(" | ")
    assert ppo[2] == "3 (+1 running) (+1 stopped)" and "Tianshou 2609" in ppo[8] and ppo[7] == "M2, ?→M2, M2→M1"
    ant = _row(text, "Ant", "KL-penalty").split(" | ")
    assert ant[7] == "?" and ant[10] == "yes (< 3 seeds) |"  # a run from before machine.json
    libraries = "Python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6, gymnasium 1.4.0, MuJoCo 3.3.7"
    assert (f"Machines: M1: Xeon (2 CPUs), {libraries}; M2: EPYC (2 CPUs), {libraries}; ?: not recorded") in text
    assert {p.name for p in (tmp_path / "fig").glob("*.png")} == {"hopper.png", "ant.png"}


def test_a_row_mixing_configs_or_repeating_a_seed_is_refused(tmp_path, table, capsys):
    fake_run(tmp_path / "a" / "s0", "trpo", "Hopper-v5", 0, 10.0)
    fake_run(tmp_path / "a" / "s1", "trpo", "Hopper-v5", 1, 10.0, lr=0.01)
    assert table.main([str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differ in algo.lr, not only in seed" in err
    fake_run(tmp_path / "b" / "x", "trpo", "Hopper-v5", 0, 10.0)
    fake_run(tmp_path / "b" / "y", "trpo", "Hopper-v5", 0, 11.0)
    assert table.main([str(tmp_path / "b")]) == 1
    assert "repeats seed 0 of trpo on Hopper-v5" in capsys.readouterr().err


def test_docs_without_markers_is_refused_and_left_alone(tmp_path, table, capsys):
    fake_run(tmp_path / "r" / "s0", "trpo", "Hopper-v5", 0, 10.0)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# no markers\n")
    assert table.main([str(tmp_path / "r"), "--docs", str(docs)]) == 1
    assert "must hold the lines <!-- benchmark-table:begin -->" in capsys.readouterr().err
    assert docs.read_text() == "# no markers\n"
    assert table.main([str(tmp_path / "nowhere")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert table.main([str(tmp_path / "empty")]) == 1
    assert "holds no run" in capsys.readouterr().err


def test_figures_draw_finished_runs_only_and_a_failure_leaves_everything(tmp_path, table, capsys, monkeypatch):
    for seed in range(3):
        fake_run(tmp_path / "r" / "trpo_Hopper" / f"s{seed}", "trpo", "Hopper-v5", seed, 3000.0 + seed,
                 tuned="trpo_Hopper" if seed else "null")  # the tuned file's name alone is no difference
    fake_run(tmp_path / "r" / "trpo_Hopper" / "s3", "trpo", "Hopper-v5", 3)
    drawn = []
    real = table.plot.draw
    monkeypatch.setattr(table.plot, "draw", lambda groups, *a: drawn.append(groups) or real(groups, *a))
    docs = tmp_path / "b.md"
    docs.write_text("<!-- benchmark-table:begin -->\n<!-- benchmark-table:end -->\n")
    assert table.main([str(tmp_path / "r"), "--figures", str(tmp_path / "fig"), "--docs", str(docs),
                       "--reps", "100"]) == 0
    assert [[p.name for p in paths] for _, paths, _ in drawn[0]] == [["s0", "s1", "s2"]]
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["hopper.csv", "hopper.md", "hopper.png"]
    before = {p: p.read_bytes() for p in [docs, *(tmp_path / "fig").iterdir()]}
    fake_run(tmp_path / "r" / "ppo_Ant" / "s0", "ppo", "Ant-v5", 0, 10.0, tag="losses/value")  # no return curve
    capsys.readouterr()
    assert table.main([str(tmp_path / "r"), "--figures", str(tmp_path / "fig"), "--docs", str(docs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: benchmark_table.py: the figure for Ant: no run of"), err
    assert {p: p.read_bytes() for p in [docs, *(tmp_path / "fig").iterdir()]} == before


@pytest.mark.parametrize("damage, expected", [
    (lambda run: (run / ".hydra" / "config.yaml").write_text("algo: [unclosed\n"), "cannot be read"),
    (lambda run: (run / ".hydra" / "config.yaml").write_text("- a list\n"), "is not a mapping"),
    (lambda run: (run / "metrics.json").write_text('{"eval/mean_return": NaN, "train/time_s": 1, '
                                                   '"train/global_step": 1}'), "a finished run has a finite"),
    (lambda run: (run / "metrics.json").write_text('{"eval/mean_return": 1, "train/time_s": 1, '
                                                   '"train/global_step": 0}'), "a finished run has a finite"),
    (lambda run: (run / "metrics.json").write_text('{"eval/mean_return": 1}'), "cannot be read (KeyError"),
    (lambda run: (run / "machine.json").write_text('[{"cpu": "Xeon"}]'), "machine.json cannot be read (KeyError"),
    (lambda run: (run / "machine.json").write_text('[]'), "machine.json lists no machine"),
])
def test_a_damaged_run_is_one_line(tmp_path, table, capsys, damage, expected):
    fake_run(tmp_path / "r" / "s0", "trpo", "Hopper-v5", 0, 10.0)
    damage(tmp_path / "r" / "s0")
    assert table.main([str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def _curve(run, tag="charts/episodic_return"):
    from rl_trust import plotting

    steps, values = plotting.load_curve(run, tag)
    return list(steps), list(values)


def test_records_keep_the_table_and_rebuild_it_with_no_run_left(tmp_path, table, capsys):
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / "trpo_Hopper" / f"s{seed}", "trpo", "Hopper-v5", seed, 3000.0 + seed,
                 cpus=["Xeon"] if seed == 0 else [])
    fake_run(tmp_path / "runs" / "trpo_Hopper" / "s2", "trpo", "Hopper-v5", 2)  # unfinished: not recorded
    (tmp_path / "runs" / "trpo_Hopper" / "s0" / "checkpoints").mkdir()  # what a record leaves out
    (tmp_path / "runs" / "trpo_Hopper" / "s0" / "checkpoints" / "final.pt").write_bytes(b"x" * 1000)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("<!-- benchmark-table:begin -->\n<!-- benchmark-table:end -->\n")
    rec = tmp_path / "docs" / "records"
    assert table.main([str(tmp_path / "runs"), "--records", str(rec), "--docs", str(docs), "--reps", "200"]) == 0
    assert "(2 runs recorded, 0 records unchanged; 1 unfinished run of" in capsys.readouterr().out
    s0 = rec / "trpo_Hopper" / "s0"
    assert sorted(str(p.relative_to(s0)) for p in s0.rglob("*") if p.is_file()) == [
        ".hydra/config.yaml", "events.out.tfevents.record", "machine.json", "metrics.json"]
    run0 = tmp_path / "runs" / "trpo_Hopper" / "s0"
    assert (s0 / "machine.json").read_bytes() == (run0 / "machine.json").read_bytes()
    assert not (rec / "trpo_Hopper" / "s1" / "machine.json").exists()
    assert _curve(s0) == _curve(tmp_path / "runs" / "trpo_Hopper" / "s0")
    assert not (rec / "trpo_Hopper" / "s2").exists()
    first = docs.read_text()
    assert "| Hopper | TRPO | 2 (+1 stopped) |" in first and "0: 3000 1: 3001" in first  # counted, not recorded
    kept = (s0 / table.RECORD_EVENTS).read_bytes()

    # the runs are gone; seed 2 finishes elsewhere: the records hold the first two, the third joins them
    fake_run(tmp_path / "later" / "s2", "trpo", "Hopper-v5", 2, 3002.0)
    assert table.main([str(tmp_path / "later"), "--records", str(rec), "--docs", str(docs), "--reps", "200"]) == 0
    assert "(1 run recorded, 0 records unchanged)" in capsys.readouterr().out
    assert "| Hopper | TRPO | 3 |" in docs.read_text() and "0: 3000 1: 3001 2: 3002" in docs.read_text()
    assert (s0 / table.RECORD_EVENTS).read_bytes() == kept
    # the records alone rebuild the same table, with or without --records naming them (then nothing is rewritten)
    for extra in ([], ["--records", str(rec)]):
        rebuilt = tmp_path / "rebuilt.md"
        rebuilt.write_text(first)
        assert table.main([str(rec), *extra, "--docs", str(rebuilt), "--reps", "200"]) == 0
        assert "recorded" not in capsys.readouterr().out
        assert rebuilt.read_text() == docs.read_text()
    # a run recorded again, unchanged, keeps its record's bytes
    fake_run(tmp_path / "again" / "s2", "trpo", "Hopper-v5", 2, 3002.0)
    assert table.main([str(tmp_path / "again"), "--records", str(rec), "--docs", str(docs), "--reps", "200"]) == 0
    assert "(0 runs recorded, 1 record unchanged)" in capsys.readouterr().out
    assert (s0 / table.RECORD_EVENTS).read_bytes() == kept
    assert sorted(p.name for p in rec.parent.iterdir()) == ["records"]  # no staging left behind


def test_records_refusals_leave_the_records_as_they_were(tmp_path, table, capsys):
    fake_run(tmp_path / "runs" / "s0", "trpo", "Hopper-v5", 0, 10.0)
    rec = tmp_path / "rec"
    assert table.main([str(tmp_path / "runs"), "--records", str(rec)]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in rec.rglob("*") if p.is_file()}
    fake_run(tmp_path / "other" / "s1", "trpo", "Hopper-v5", 1, 12.0, lr=0.01)  # not the records' config
    assert table.main([str(tmp_path / "other"), "--records", str(rec)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differ in algo.lr, not only in seed" in err
    assert f"{rec}/trpo_Hopper/s" in err  # the record, not its staging copy
    assert {p: p.read_bytes() for p in rec.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "rec", "runs"]
    assert table.main([str(tmp_path / "runs"), "--records", str(tmp_path / "runs" / "rec")]) == 1
    assert "lies inside ROOT" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert table.main([str(tmp_path / "runs"), "--records", str(tmp_path / "file")]) == 1
    err = capsys.readouterr().err
    assert "--records" in err and "exists and is not a directory" in err


def test_records_paths_that_would_clash_are_refused(tmp_path, table, capsys):
    rec = tmp_path / "rec"
    fake_run(tmp_path / "runs" / "s0", "trpo", "Hopper-v5", 0, 10.0)
    assert table.main([str(tmp_path / "runs"), "--records", str(rec)]) == 0
    capsys.readouterr()
    fake_run(rec / "incoming" / "s1", "trpo", "Hopper-v5", 1, 11.0)  # ROOT inside the records it rewrites
    assert table.main([str(rec / "incoming"), "--records", str(rec)]) == 1
    assert "lies inside --records" in capsys.readouterr().err and (rec / "incoming" / "s1" / "metrics.json").exists()
    shutil.rmtree(rec / "incoming")
    assert table.main([str(tmp_path / "runs"), "--records", str(rec), "--figures", str(rec / "fig")]) == 1
    assert "--figures" in capsys.readouterr().err and not (rec / "fig").exists()
    # a link to the records: they are written where it points, and the link stays
    link = tmp_path / "link"
    link.symlink_to(rec, target_is_directory=True)
    fake_run(tmp_path / "more" / "s1", "trpo", "Hopper-v5", 1, 11.0)
    assert table.main([str(tmp_path / "more"), "--records", str(link)]) == 0
    assert link.is_symlink() and (rec / "trpo_Hopper" / "s1" / "metrics.json").exists()
    capsys.readouterr()
    # a call stopped between its two renames leaves the records parked: the next call says where they are
    (tmp_path / ".benchmark_table-old-rec").mkdir()
    rec.rename(tmp_path / "parked")
    assert table.main([str(tmp_path / "more"), "--records", str(rec)]) == 1
    assert "holds the records of a call that was stopped" in capsys.readouterr().err


def test_a_run_without_the_curve_is_not_recorded(tmp_path, table, capsys):
    fake_run(tmp_path / "runs" / "s0", "trpo", "Hopper-v5", 0, 10.0, tag="losses/value")
    assert table.main([str(tmp_path / "runs"), "--records", str(tmp_path / "rec")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never logged charts/episodic_return" in err
    assert not (tmp_path / "rec").exists()


REPO = Path(__file__).resolve().parents[1]


def test_the_documented_records_are_versioned():
    """docs/table/runs is what the table is rebuilt from: no ignore rule may keep it out of git."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["docs/table/runs/trpo_Hopper/s0/metrics.json", "docs/table/runs/trpo_Hopper/s0/machine.json",
             "docs/table/runs/trpo_Hopper/s0/.hydra/config.yaml",
             "docs/table/runs/trpo_Hopper/s0/events.out.tfevents.record"]
    out = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", *paths], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == "", out.stdout  # 1: none of them is ignored



def test_the_docs_table_is_the_table_of_the_versioned_records(tmp_path, table, capsys):
    """docs/benchmarks.md's table is rebuilt, to the character, from docs/table/runs by the documented command."""
    docs = REPO / "docs" / "benchmarks.md"
    copy = tmp_path / "benchmarks.md"
    copy.write_text(docs.read_text())
    assert table.main([str(REPO / "docs" / "table" / "runs"), "--docs", str(copy)]) == 0, capsys.readouterr().err
    assert copy.read_text() == docs.read_text()
