"""The design card's command on a plain Ray head, as a new user meets it (issue: "works on any Ray cluster").

``ray start --head`` from the project's venv, then ``ray job submit --working-dir . -- python
orchestration/full_pipeline.py``: nothing from ``infra/``, none of Diff-CXR's environment variables. The job
runs from Ray's copy of the working directory and still finds the TAEF2 weights (beside the checkout the venv
was installed from), keeps its tracking in a local store and says so, and finishes the first stages. Once a
second node joins, the same command refuses before any work, naming the shared stores it needs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from diffcxr import manifest
from diffcxr.env import DEFAULTS

pytestmark = [pytest.mark.ray, pytest.mark.exclusive]  # `ray start`, `ray stop`
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bare_environment() -> dict[str, str]:
    """A user's shell: this process's environment without Diff-CXR's own variables and defaults, with the
    project's venv first on PATH (as after `source .venv/bin/activate`)."""
    ours = ("DIFFCXR_", "MLFLOW_", "RAY_")
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith(ours)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_plain_ray_head_runs_the_bare_job_command(tmp_path: Path) -> None:
    env, ray = bare_environment(), str(Path(sys.executable).parent / "ray")
    dashboard, gcs = _free_port(), _free_port()
    subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    start = [ray, "start", "--head", "--port", str(gcs), "--dashboard-port", str(dashboard),
             "--num-cpus", "2", "--disable-usage-stats"]  # fmt: skip
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        runs = tmp_path / "runs"
        job = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ".", "--",
               "python", "orchestration/full_pipeline.py", "--to", "filter",
               "--set", "data.max_reports=40", "--set", f"project.run_root={runs}"]  # fmt: skip
        done = subprocess.run(job, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        assert "single-node cluster: run folder on this node's disk" in out and "MLflow store only this node" in out
        assert "[2/2] filter: done" in out

        second = [ray, "start", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "1", "--disable-usage-stats"]
        joined = subprocess.run(second, env=env, capture_output=True, text=True, timeout=180)
        assert joined.returncode == 0, joined.stderr[-2000:]
        job[job.index("--to") + 1] = "data"
        refused = subprocess.run(job, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0, out[-4000:]
        assert "this Ray cluster has 2 nodes" in out and "project.run_root to an s3:// URI" in out, out[-4000:]
        assert "data: done" not in out  # refused before any work
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    kept = manifest.kept_rows(manifest.read(str(runs / "filter" / "manifest.parquet")))
    assert kept and (runs / "filter" / "latents").is_dir()
