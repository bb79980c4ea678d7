"""Faults the pipeline must survive or report cleanly, against real MLflow servers (bounded in time).

* MLflow unreachable at start: a clear error before any work, no traceback.
* MLflow gone mid-run: the stage's calls retry with backoff, then the run fails
  naming the stage, with nothing lost: a re-run against the restarted server
  skips what finished.
* MLflow back within the backoff window: the call that was retrying succeeds.

(A killed Ray Train worker is in ``test_text.py``; a job stopped mid-diffusion and
re-submitted is in ``test_launch.py``.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diffcxr.tracking import Tracker, set_retry_policy
from infra.local import Service, free_port, start_mlflow

REPO = Path(__file__).resolve().parent.parent
PIPELINE = [sys.executable, str(REPO / "orchestration" / "full_pipeline.py"), "--config", "tiny"]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_mlflow_unreachable_at_start_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    started = time.time()
    res = subprocess.run(
        [*PIPELINE, *_sets(f"project.run_root={runs}", f"tracking.uri=http://127.0.0.1:{free_port()}")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "MLflow tracking server at http://127.0.0.1:" in res.stderr and "is unreachable" in res.stderr
    assert "nothing was run" in res.stderr and "Traceback" not in res.stderr
    assert time.time() - started < 60  # one probe, not minutes of retries
    assert not runs.exists()


@pytest.mark.mlflow
def test_mlflow_lost_mid_run_fails_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    state, port = tmp_path / "mlflow", free_port()
    server = start_mlflow(state, tmp_path / "logs", port=port)
    runs = tmp_path / "runs"
    args = [*PIPELINE, "--to", "filter",
            *_sets(f"project.run_root={runs}", f"tracking.uri={server.url}", "data.max_reports=20",
                   "tracking.retries=2", "tracking.backoff_s=1", "tracking.timeout_s=5")]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the server goes away as soon as the data stage has finished
            if "[1/2] data: done" in line:
                server.stop()
                break
        try:
            out, err = proc.communicate(timeout=360)
        except subprocess.TimeoutExpired:  # say where it hangs: the pipeline's own log, not only the timeout
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the pipeline still ran 360 s after MLflow went away; stdout:\n{out[-2000:]}\n"
                        f"stderr:\n{err[-4000:]}")  # fmt: skip
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 2, err[-3000:]
    assert f"MLflow at {server.url} became unreachable during stage 'filter'" in err, err[-3000:]
    assert "within 2 retries" in err and "Nothing is lost" in err and "Traceback" not in err
    assert (runs / "data" / "_stage.json").is_file() and not (runs / "filter" / "_stage.json").exists()

    server = start_mlflow(state, tmp_path / "logs", port=port)  # the same store, back again
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[1/2] data: skipped (current)" in res.stdout and "[2/2] filter: done" in res.stdout
    assert "rows:" in res.stdout and "(balanced;" in res.stdout


@pytest.mark.mlflow
def test_a_call_retries_until_mlflow_is_back(tmp_path: Path) -> None:
    state, port = tmp_path / "mlflow", free_port()
    server = start_mlflow(state, tmp_path / "logs", port=port)
    tracker = Tracker(server.url, "retry")
    set_retry_policy(6, 1, 10)  # 1+2+4+8+16+32 s of patience: more than a restart takes
    restarted: list[Service] = []
    try:
        with tracker.run("outage") as run:
            server.stop()
            threading.Timer(2.0, lambda: restarted.append(start_mlflow(state, tmp_path / "logs", port=port))).start()
            tracker.log_metrics({"survived": 1.0})  # blocks in MLflow's backoff until the server answers again
        assert MlflowClient(server.url).get_run(run.info.run_id).data.metrics["survived"] == 1.0
    finally:
        deadline = time.time() + 60
        while not restarted and time.time() < deadline:
            time.sleep(0.2)
        for service in restarted:
            service.stop()
