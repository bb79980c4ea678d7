"""The README's first command end to end: local MLflow server + Ray head, the pipeline as a Ray job.

One test, two launches, as a user would meet them: the first is interrupted with
Ctrl-C while the U-ViT trains (a Ray Train checkpoint exists): the launcher stops
the job, the Ray head and the MLflow server. The second launch finds data, filter
and text current, resumes the diffusion stage from its checkpoint, then runs eval
and the promotion gate, and the job succeeds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diffcxr import manifest

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]
REPO = Path(__file__).resolve().parent.parent
QUICK = [
    "data.max_reports=20",
    "data.split_fractions=[0.45,0.05,0.5]",  # enough test reports for the eval stage
    "text.steps=4",
    "text.batch_size=8",
    "text.checkpoint_every=2",
    "diffusion.steps=12",
    "diffusion.batch_size=8",
    "diffusion.checkpoint_every=2",
    "diffusion.preview_reports=0",
    "adapter.steps=2",
    "adapter.batch_size=8",
    "adapter.checkpoint_every=2",
    "sampling.steps=2",
    "eval.classifier_steps=2",
    "eval.classifier_batch_size=8",
    "eval.downstream=false",
    "eval.latency_images=1",
    "promotion.min_mauc=null",  # a few training steps cannot reach the floor; test_register tests the floor
    "promotion.min_sd_over_chance=null",  # nor beat their chance control
]


def _launch(state: Path, runs: Path) -> list[str]:
    sets = [arg for item in (f"project.run_root={runs}", *QUICK) for arg in ("--set", item)]
    return [sys.executable, "-m", "infra.launch", "--state", str(state), *sets]


def _nothing_left(state: Path) -> None:
    leftover = subprocess.run(["pgrep", "-f", f"mlflow.*{state}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
    assert subprocess.run(["pgrep", "-f", "raylet"], capture_output=True).returncode != 0


def test_ctrl_c_mid_diffusion_stops_everything_and_the_next_launch_resumes(tmp_path: Path) -> None:
    state, runs = tmp_path / "mlflow-state", tmp_path / "runs"
    proc = subprocess.Popen(_launch(state, runs), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    checkpoints = runs / "diffusion" / "ray"
    deadline = time.time() + 420
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(checkpoints.rglob("state.pt")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "".join(lines)[-3000:]
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal delivers
    proc.wait(timeout=180)
    reader.join(timeout=10)
    first = "".join(lines)
    assert proc.returncode == 130, first[-3000:]
    assert "[3/6] text: done" in first and "stopping Ray job" in first and "job status: failed (130)" in first
    assert not (runs / "diffusion" / "_stage.json").exists()
    _nothing_left(state)

    res = subprocess.run(_launch(state, runs), cwd=REPO, capture_output=True, text=True, timeout=480)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for stage in ("[1/6] data", "[2/6] filter", "[3/6] text"):
        assert f"{stage}: skipped (current)" in out
    assert "[4/6] diffusion: done" in out and "[5/6] eval: done" in out and "[6/6] register: done" in out
    assert "job status: succeeded" in out and "stage times:" in out and "is @champion" in out
    summary = json.loads((runs / "diffusion" / "summary.json").read_text())
    assert summary["uvit"]["resumed_from_step"] >= 2 and summary["uvit"]["trained_steps"] == 12, summary["uvit"]
    assert (runs / "eval" / "report.html").is_file() and (runs / "register" / "promotion.json").is_file()
    table = manifest.read(str(runs / "data" / "manifest.parquet"))
    assert len(set(table.column("report_id").to_pylist())) == 20
    store = f"sqlite:///{state / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)  # not the registry another test made the process default
    exp = client.get_experiment_by_name("diffcxr")
    stages = {r.data.tags.get("diffcxr.stage") for r in client.search_runs([exp.experiment_id])}
    assert {"pipeline", "data", "filter", "text", "diffusion", "eval", "register"} <= stages
    assert str(client.get_model_version_by_alias("diffcxr-generator", "champion").version) == "1"
    _nothing_left(state)
