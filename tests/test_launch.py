"""The README's first command end to end: local MLflow server + Ray head, pipeline as a Ray job.

Slow (~45 s: a Ray head start and stop, an MLflow server, a job upload) but it is
the only test of what a user runs first, so it runs in CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diffcxr import manifest

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]
REPO = Path(__file__).resolve().parent.parent


def test_launch_submits_the_pipeline_as_a_ray_job(tmp_path: Path) -> None:
    state = tmp_path / "mlflow-state"
    runs = tmp_path / "runs"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.launch",
            "--state",
            str(state),
            "--set",
            f"project.run_root={runs}",
            "--set",
            "data.max_reports=20",
            *[
                arg
                for item in (
                    "text.steps=4",
                    "text.batch_size=8",
                    "text.checkpoint_every=2",
                    "diffusion.steps=2",
                    "diffusion.batch_size=8",
                    "diffusion.checkpoint_every=2",
                    "diffusion.preview_reports=0",
                    "adapter.steps=2",
                    "adapter.batch_size=8",
                    "adapter.checkpoint_every=2",
                    "sampling.steps=2",
                    "data.split_fractions=[0.45,0.05,0.5]",  # enough test reports for the eval stage
                    "eval.classifier_steps=2",
                    "eval.classifier_batch_size=8",
                    "eval.downstream=false",
                    "eval.latency_images=1",
                )
                for arg in ("--set", item)
            ],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "[1/6] data: done" in out and "job status: succeeded" in out
    table = manifest.read(str(runs / "data" / "manifest.parquet"))
    assert len(set(table.column("report_id").to_pylist())) == 20
    client = MlflowClient(f"sqlite:///{state / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffcxr")
    stages = {r.data.tags.get("diffcxr.stage") for r in client.search_runs([exp.experiment_id])}
    assert {"pipeline", "data", "filter", "text", "diffusion", "eval"} <= stages
    assert "[5/6] eval: done" in out and (runs / "eval" / "report.html").is_file()
    assert "[4/6] diffusion: done" in out and (runs / "diffusion" / "generator" / "generator.json").is_file()
    assert "[3/6] text: done" in out and (runs / "text" / "embeddings" / "embeddings.json").is_file()
    # everything the launcher started is stopped again
    leftover = subprocess.run(["pgrep", "-f", f"mlflow.*{state}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
    assert subprocess.run(["pgrep", "-f", "raylet"], capture_output=True).returncode != 0
