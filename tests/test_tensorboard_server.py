"""A real TensorBoard server on a finished run: its scalars, HParams and video clips through the HTTP API."""

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

LIFETIME_S = 180  # the server stops by itself after this, whatever happens to the test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(video_run):
    port = free_port()
    cmd = ["timeout", str(LIFETIME_S), sys.executable, "-m", "tensorboard.main", "--logdir", str(video_run), "--host",
           "127.0.0.1", "--port", str(port), "--load_fast=false", "--reload_interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def get(path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with urllib.request.urlopen(urllib.request.Request(base + path, data=data, headers=headers), timeout=30) as r:
            raw = r.read()
        return raw if r.headers.get_content_type() != "application/json" else json.loads(raw)

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                # the run is loaded once its last tag (the final HParams metrics) is there
                if "eval/mean_return" in get("/data/plugin/scalars/tags").get(".", {}):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "TensorBoard did not serve the run within 90 s"
            time.sleep(0.5)
        yield get
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tensorboard_serves_scalars_hparams_and_videos(server, video_run):
    plugins = server("/data/plugins_listing")
    assert all(plugins[name]["enabled"] for name in ("scalars", "hparams", "images"))
    assert server("/data/runs") == ["."]  # one run: its HParams are in its own directory, no sub-folder

    final = json.loads((video_run / "metrics.json").read_text())
    (_, step, value), = server("/data/plugin/scalars/scalars?" + urlencode({"run": ".", "tag": "eval/mean_return"}))
    assert step == 192 and math.isclose(value, final["eval/mean_return"], rel_tol=1e-6)
    kl = server("/data/plugin/scalars/scalars?" + urlencode({"run": ".", "tag": "trust_region/kl"}))
    assert [s for _, s, _ in kl] == [64, 128, 192] and all(0 < v < 0.1 for _, _, v in kl)

    experiment = server("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"algo.name", "env.id", "algo.max_kl", "seed", "gamma"} <= hparams
    assert "video.every_steps" not in hparams  # watching a run does not change it
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"eval/mean_return", "eval/std_return", "train/recent_return"} <= metrics

    assert "videos/episode" in server("/data/plugin/images/tags")["."]
    clips = server("/data/plugin/images/images?" + urlencode({"run": ".", "tag": "videos/episode", "sample": 0}))
    assert [c["step"] for c in clips] == [64, 128, 192]
    gif = server(f"/data/plugin/images/individualImage?{clips[-1]['query']}")
    assert gif[:4] == b"GIF8" and len(gif) > 1000
