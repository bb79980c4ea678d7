"""The README's first command end to end: local MLflow server + Ray head, the pipeline as a Ray job.

One test, two launches, as a user would meet them, with every URI on S3 (the moto
server): the run root (manifests, images, Ray Train checkpoints, models) and the
MLflow server's artefacts and registered models. The first launch is interrupted
with Ctrl-C while the U-ViT trains (a Ray Train checkpoint exists): the launcher
stops the job, the Ray head and the MLflow server. The second finds data, filter
and text current, resumes the diffusion stage from its checkpoint, then runs eval
and the promotion gate (no champion yet, so the generator and its parts become
champion), and the job succeeds with one nested MLflow run per stage and the row
accounting balanced. (That diffusion, eval and register skip when current is tested
with each stage: test_diffusion, test_eval, test_register.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diffcxr import manifest, storage
from orchestration.full_pipeline import STAGES

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.s3, pytest.mark.exclusive]  # `ray start`, `ray stop`
REPO = Path(__file__).resolve().parent.parent
QUICK = [
    "data.max_reports=20",
    "data.split_fractions=[0.45,0.05,0.5]",  # enough test reports for the eval stage
    "filter.lae_steps=20",  # test_filter tests what the filter learns; here it only has to run and be skipped
    "filter.disc_steps=20",
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


def _launch(state: Path, runs: str, artifacts: str) -> list[str]:
    sets = [arg for item in (f"project.run_root={runs}", *QUICK) for arg in ("--set", item)]
    return [sys.executable, "-m", "infra.launch", "--state", str(state), "--artifacts", artifacts, *sets]


def _like_a_terminal() -> None:
    """In the launcher before it starts: SIGINT at its default, as in a terminal's foreground job. Run from a
    background job (``pytest … &``), the test would otherwise pass on an ignored SIGINT, which the launcher
    keeps, as the shell intended for background jobs."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _nothing_left(state: Path) -> None:
    leftover = subprocess.run(["pgrep", "-f", f"mlflow.*{state}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
    assert subprocess.run(["pgrep", "-f", "raylet"], capture_output=True).returncode != 0


def test_ctrl_c_mid_diffusion_stops_everything_and_the_next_launch_resumes(tmp_path: Path, s3_bucket: str) -> None:
    state, runs, artifacts = tmp_path / "mlflow-state", f"{s3_bucket}/runs", f"{s3_bucket}/mlflow-artifacts"
    launch = _launch(state, runs, artifacts)
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}  # the server's artefact store
    proc = subprocess.Popen(launch, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_like_a_terminal)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 600  # a guard only: data, filter and text take ~3.5 min here
    while time.time() < deadline and proc.poll() is None:
        if storage.list_files(f"{runs}/diffusion/ray", suffix="state.pt"):  # the Ray Train checkpoints are on S3
            break
        time.sleep(0.5)
    assert proc.poll() is None, "".join(lines)[-3000:]
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal delivers
    proc.wait(timeout=180)
    reader.join(timeout=10)
    first = "".join(lines)
    assert proc.returncode == 130, first[-3000:]
    assert "[3/6] text: done" in first and "stopping Ray job" in first and "job status: failed (130)" in first
    assert not storage.exists(f"{runs}/diffusion/_stage.json")
    _nothing_left(state)

    res = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for stage in ("[1/6] data", "[2/6] filter", "[3/6] text"):
        assert f"{stage}: skipped (current)" in out
    assert "[4/6] diffusion: done" in out and "[5/6] eval: done" in out and "[6/6] register: done" in out
    assert "job status: succeeded" in out and "stage times:" in out and "is @champion" in out
    summary = json.loads(storage.read_text(f"{runs}/diffusion/summary.json"))
    assert summary["uvit"]["resumed_from_step"] >= 2 and summary["uvit"]["trained_steps"] == 12, summary["uvit"]
    assert storage.exists(f"{runs}/eval/report.html") and storage.exists(f"{runs}/diffusion/generator/generator.json")
    assert storage.exists(f"{runs}/text/embeddings/embeddings.json")
    _everything_on_s3(runs, artifacts)
    _one_run_per_stage_and_the_gate(state, json.loads(storage.read_text(f"{runs}/register/promotion.json")))
    _nothing_left(state)


def _everything_on_s3(runs: str, artifacts: str) -> None:
    """Manifests and images under the S3 run root, every row accounted for, MLflow artefacts on S3."""
    table = manifest.read(f"{runs}/data/manifest.parquet")
    assert len(set(table.column("report_id").to_pylist())) == 20
    images = [u for u in table.column("image_uri").to_pylist() if u]
    assert images and all(u.startswith(f"{runs}/data/images/") for u in images)
    kept = manifest.kept(table).to_pylist()
    assert kept and all(r["label_source"] == "rules-v1" and r["disease_sentence"] for r in kept)
    assert manifest.read(f"{runs}/filter/manifest.parquet").num_rows == table.num_rows
    assert storage.list_files(artifacts, suffix="rows.json") and storage.list_files(artifacts, suffix="report.html")


def _one_run_per_stage_and_the_gate(state: Path, promotion: dict) -> None:
    """The parent run has a nested run per stage and balanced rows; no champion existed, so the generator and
    its parts became champion, with the reason on the model version."""
    store = f"sqlite:///{state / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)  # not the registry another test made the process default
    exp = client.get_experiment_by_name("diffcxr")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("diffcxr.stage") == "pipeline" and r.info.status == "FINISHED"]
    assert len(parents) == 1, [(r.info.run_id, r.info.status) for r in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["diffcxr.stage"] for r in children} == set(STAGES)
    rows = parent.data.metrics
    assert rows["rows.total"] == rows["rows.kept"] + rows["rows.filtered"] + rows["rows.quarantined"] > 0
    assert parent.data.tags["rows.balanced"] == "true"

    assert promotion["alias"] == "champion" and promotion["reason"].startswith("no champion yet")
    version = str(promotion["version"])

    def alias_version(name: str, alias: str) -> str:
        return str(client.get_model_version_by_alias(name, alias).version)

    assert version == "1" and alias_version("diffcxr-generator", "champion") == version
    assert alias_version("diffcxr-generator", "candidate") == version
    assert set(promotion["parts"]) == {"diffcxr-text", "diffcxr-uvit", "diffcxr-adapter"}
    for part, part_version in promotion["parts"].items():
        assert alias_version(part, "champion") == str(part_version)
    described = client.get_model_version("diffcxr-generator", version)
    assert described.description.startswith("champion: no champion yet")
    assert described.tags["promotion.decision"] == "champion" and described.tags["eval.set"] == promotion["eval_set"]
