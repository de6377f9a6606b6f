"""Plots across seeds: rliable's IQM and bootstrap intervals, groups by glob, the final-return table."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import ROOT
from rliable import metrics
from scipy.stats import trim_mean
from test_bad_input import load_script
from torch.utils.tensorboard import SummaryWriter

from rl_trust import plotting


def fake_run(path, env_id, values, final=None, tag="charts/episodic_return"):
    path.mkdir(parents=True)
    with SummaryWriter(str(path)) as w:
        for step, v in enumerate(values):
            w.add_scalar(tag, v, (step + 1) * 100)
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text(f"env:\n  id: {env_id}\n")
    if final is not None:
        (path / "metrics.json").write_text(json.dumps({"eval/mean_return": final}))


def test_iqm_per_point_is_rliables_iqm_of_each_point():
    rng = np.random.default_rng(0)
    for runs, tasks in ((3, 1), (5, 1), (7, 2), (10, 3)):
        scores = rng.standard_normal((runs, tasks, 11)) * rng.uniform(1, 100, 11)
        expected = [metrics.aggregate_iqm(scores[..., j]) for j in range(11)]
        np.testing.assert_allclose(plotting.iqm(scores), expected, rtol=1e-12)


def test_final_row_against_direct_computation(tmp_path):
    finals = [10.0, 200.0, 30.0, 45.0, -5.0, 60.0, 70.0, 1000.0]
    runs = [plotting.Run(tmp_path / str(i), "Task-v0", f) for i, f in enumerate(finals)] + [
        plotting.Run(tmp_path / "unfinished", "Task-v0", None)]
    row = plotting.final_row("algo", runs, reps=2000, ci=0.95, seed=0)
    assert row["runs"] == 8 and row["env"] == "Task-v0"
    assert row["mean"] == pytest.approx(np.mean(finals)) and row["std"] == pytest.approx(np.std(finals))
    assert row["iqm"] == pytest.approx(trim_mean(finals, 0.25)) and row["median"] == pytest.approx(np.median(finals))
    assert row["iqm_low"] < row["iqm"] < row["iqm_high"]
    assert min(finals) <= row["iqm_low"] and row["iqm_high"] <= max(finals)
    assert row == plotting.final_row("algo", runs, reps=2000, ci=0.95, seed=0)  # seeded bootstrap
    wider = plotting.final_row("algo", runs, reps=2000, ci=0.99, seed=0)
    assert wider["iqm_low"] <= row["iqm_low"] and wider["iqm_high"] >= row["iqm_high"]


def test_plot_groups_by_glob_and_writes_figure_and_tables(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for algo, level in (("trpo", 100.0), ("ppo", 50.0)):
        for seed in range(3):
            fake_run(tmp_path / "runs" / f"2026_{algo}_Task_s{seed}", "Task-v0",
                     level * np.linspace(0, 1, 30) + rng.standard_normal(30), final=level + seed)
    fake_run(tmp_path / "runs" / "2026_ppo_Task_s9", "Task-v0", np.ones(5))  # unfinished: curve, no final
    out = tmp_path / "fig" / "curves.png"
    code = load_script("plot").main(["--group", f"trpo={tmp_path}/runs/*trpo*", "--group",
                                     f"ppo={tmp_path}/runs/*ppo*", "--out", str(out), "--profile",
                                     str(tmp_path / "fig" / "profile.png"), "--reps", "500"])
    assert code == 0
    assert out.stat().st_size > 10_000 and (tmp_path / "fig" / "profile.png").stat().st_size > 10_000
    rows = list(csv.DictReader(io.StringIO(out.with_suffix(".csv").read_text())))
    assert [(r["group"], r["runs"], r["seeds"]) for r in rows] == [("trpo", "3", "100.0 101.0 102.0"),
                                                                   ("ppo", "3", "50.0 51.0 52.0")]
    assert float(rows[0]["mean"]) == pytest.approx(101.0)
    md = out.with_suffix(".md").read_text()
    assert "| trpo | Task-v0 | 3 | 101.0 ± 0.8 |" in md and md in capsys.readouterr().out


def test_run_dirs_follow_links_and_list_a_run_once(tmp_path):
    for seed in range(2):
        fake_run(tmp_path / "runs" / f"ppo_s{seed}", "Task-v0", [1, 2, 3], final=3)
    links = tmp_path / "runs" / "ppo_all"  # a folder of links to the runs, as the docs' plotting commands use
    links.mkdir()
    for seed in range(2):
        (links / f"s{seed}").symlink_to(tmp_path / "runs" / f"ppo_s{seed}", target_is_directory=True)
    (links / "loop").symlink_to(tmp_path / "runs", target_is_directory=True)  # a cycle: walked once
    assert plotting.run_dirs(links) == [links / "s0", links / "s1"]
    runs = tmp_path / "runs"
    assert plotting.run_dirs(runs) == [runs / "ppo_s0", runs / "ppo_s1"]  # once each, by the shallowest path
    assert plotting.expand("ppo", str(links)) == [links / "s0", links / "s1"]
    assert len(plotting.expand("ppo", f"{runs}/ppo*")) == 2  # matched directly and through the links: once


def test_a_group_over_two_tasks_is_refused(tmp_path, capsys):
    fake_run(tmp_path / "a", "Hopper-v5", [1, 2, 3], final=3)
    fake_run(tmp_path / "b", "Walker2d-v5", [1, 2, 3], final=3)
    code = load_script("plot").main(["--group", f"mixed={tmp_path}/*", "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mixed: its runs are on 2 tasks (Hopper-v5, Walker2d-v5)" in err[0]
    assert not (tmp_path / "p.png").exists()


def test_runs_without_the_tag_are_named_and_left_out(tmp_path, capsys):
    fake_run(tmp_path / "g" / "a", "T-v0", [1, 2, 3], final=3)
    fake_run(tmp_path / "g" / "b", "T-v0", [1, 2, 3], final=3, tag="other/tag")
    assert load_script("plot").main([str(tmp_path / "g"), "--out", str(tmp_path / "p.png"), "--reps", "100"]) == 0
    assert "1 of 2 runs lack 'charts/episodic_return'" in capsys.readouterr().err


def test_the_readme_plot_command_still_works_on_a_real_run(video_run, tmp_path):
    assert load_script("plot").main([str(video_run), "--tag", "losses/value", "--out", str(tmp_path / "c.png")]) == 0
    assert (ROOT / "scripts" / "plot.py").exists()


def test_a_failed_write_leaves_no_output(tmp_path, capsys):
    fake_run(tmp_path / "g" / "a", "T-v0", [1, 2, 3], final=3)
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "out" / "p.png"
    code = load_script("plot").main([str(tmp_path / "g"), "--out", str(out), "--profile",
                                     str(tmp_path / "file" / "prof.png"), "--reps", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot write" in err[0]
    assert not out.exists() and sorted(p.name for p in out.parent.iterdir()) == []  # no figure, table or temp file
