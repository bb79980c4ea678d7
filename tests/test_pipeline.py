"""The pipeline in-process: stages in order under one MLflow parent run, skip when current, S3 run roots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diffcxr import manifest, storage
from diffcxr.config import load_config
from diffcxr.errors import DiffCXRError
from orchestration.full_pipeline import run_pipeline, select_stages

#: The text stage on ~14 training pairs: a few steps, batches that fit.
TEXT_QUICK = ["text.steps=4", "text.batch_size=8", "text.checkpoint_every=2", "ray.num_workers=1"]
#: The diffusion stage on the same pairs: two short Ray Train fits.
DIFFUSION_QUICK = [
    "diffusion.steps=4",
    "diffusion.batch_size=8",
    "diffusion.checkpoint_every=2",
    "diffusion.sample_every=4",
    "diffusion.preview_reports=2",
    "adapter.steps=2",
    "adapter.batch_size=8",
    "adapter.checkpoint_every=2",
    "sampling.steps=2",
]
#: The eval stage on the few test reports: a short classifier fit, no downstream experiment.
EVAL_QUICK = [
    "eval.classifier_steps=2",
    "eval.classifier_batch_size=8",
    "eval.downstream=false",
    "eval.latency_images=1",
]


def _cfg(run_root: str, tracking: str, experiment: str, *extra: str):
    return load_config(
        "tiny",
        [
            f"project.run_root={run_root}",
            f"tracking.uri={tracking}",
            f"tracking.experiment={experiment}",
            "data.max_reports=20",
            "data.split_fractions=[0.45,0.05,0.5]",  # 8 test reports with images: FID compares sets
            *TEXT_QUICK,
            *DIFFUSION_QUICK,
            *EVAL_QUICK,
            *extra,
        ],
    )


def test_stage_selection() -> None:
    assert select_stages(None, None)[0] == "data"
    assert select_stages("data", None) == ["data"]
    assert select_stages(None, "eval") == ["eval", "register"]
    with pytest.raises(DiffCXRError, match="unknown stage 'fitler'; stages are data, filter"):
        select_stages("fitler", None)


@pytest.mark.mlflow
def test_pipeline_runs_data_then_skips_until_config_changes(
    tmp_path: Path, mlflow_server: str, experiment_name: str, ray_local: None
) -> None:
    cfg = _cfg(str(tmp_path / "runs"), mlflow_server, experiment_name)
    first = run_pipeline(cfg, select_stages(None, None))
    assert first["data"]["status"] == "done"
    assert first["filter"]["status"] == "done" and first["text"]["status"] == "done"
    assert first["diffusion"]["status"] == "done" and storage.exists(first["diffusion"]["generator"])
    assert first["eval"]["status"] == "done" and storage.exists(first["eval"]["report"])
    assert first["register"] == {"status": "not built", "issue": "#10"}
    assert storage.exists(storage.join(first["text"]["embeddings"], "embeddings.json"))
    table = manifest.read(first["data"]["manifest"])
    assert manifest.read(first["filter"]["manifest"]).num_rows == table.num_rows
    assert len(set(table.column("report_id").to_pylist())) == 20
    kept = manifest.kept(table).to_pylist()
    assert kept and all(r["label_source"] == "rules-v1" and r["disease_sentence"] for r in kept)
    assert any(r["No Finding"] == 1 for r in kept)

    second = run_pipeline(cfg, ["data"])
    assert second["data"]["status"] == "skipped (current)"
    third = run_pipeline(_cfg(str(tmp_path / "runs"), mlflow_server, experiment_name, "data.max_reports=25"), ["data"])
    assert third["data"]["status"] == "done"
    assert len(set(manifest.read(third["data"]["manifest"]).column("report_id").to_pylist())) == 25

    client = MlflowClient(mlflow_server)
    children = client.search_runs(
        [client.get_experiment_by_name(experiment_name).experiment_id],
        f"tags.mlflow.parentRunId = '{first['mlflow_run_id']}'",
    )
    data_run = next(r for r in children if r.data.tags["diffcxr.stage"] == "data")
    assert {r.data.tags["diffcxr.stage"] for r in children} == {"data", "filter", "text", "diffusion", "eval"}
    assert data_run.data.metrics["data.rows"] == table.num_rows
    assert data_run.data.params["data.manifest_uri"] == first["data"]["manifest"]


def test_only_a_stage_that_is_not_built_is_an_error(tmp_path: Path, home: Path) -> None:
    cfg = _cfg(str(tmp_path / "runs"), f"sqlite:///{tmp_path}/m.db", "exp")
    with pytest.raises(DiffCXRError, match="stage 'register' is not built yet \\(issue #10\\)"):
        run_pipeline(cfg, ["register"])


@pytest.mark.s3
def test_pipeline_with_an_s3_run_root(s3_bucket: str, tmp_path: Path, home: Path) -> None:
    cfg = _cfg(f"{s3_bucket}/runs", f"sqlite:///{tmp_path}/m.db", "exp-s3")
    out = run_pipeline(cfg, ["data"])
    assert out["data"]["manifest"] == f"{s3_bucket}/runs/data/manifest.parquet"
    assert storage.exists(f"{s3_bucket}/runs/data/_stage.json")
    table = manifest.read(out["data"]["manifest"])
    assert table.num_rows == 20 and set(table.column("source").to_pylist()) == {"phantom"}  # tiny renders phantoms
    images = [u for u in table.column("image_uri").to_pylist() if u]
    assert images and all(u.startswith(f"{s3_bucket}/runs/data/images/") and storage.exists(u) for u in images)
    assert run_pipeline(cfg, ["data"])["data"]["status"] == "skipped (current)"


def test_cli_pipeline_and_data_commands(tmp_path: Path, home: Path) -> None:
    run = [sys.executable, "-m", "diffcxr.cli"]
    out_uri = str(tmp_path / "m.parquet")
    res = subprocess.run(
        [*run, "data", "manifest", "--set", "data.max_reports=10", "--out", out_uri],
        capture_output=True,
        text=True,
        cwd=home,
    )
    assert res.returncode == 0, res.stderr
    assert '"reports_read": 10' in res.stdout
    res = subprocess.run([*run, "data", "show", out_uri, "--limit", "1"], capture_output=True, text=True)
    assert res.returncode == 0 and '"sample_id": "iu:' in res.stdout and "report_text" not in res.stdout
    res = subprocess.run(
        [*run, "pipeline", "run", "--only", "data", "--set", "data.max_reports=10"],
        capture_output=True,
        text=True,
        cwd=home,
    )
    assert res.returncode == 0, res.stderr
    assert "[1/1] data: done" in res.stdout and (home / "var/runs/tiny/data/manifest.parquet").is_file()
    res = subprocess.run([*run, "eval"], capture_output=True, text=True)  # no generator trained in this run
    assert res.returncode == 2 and "var/runs/tiny/diffusion/generator' does not resolve" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "group",
    ["config", "data", "label", "filter", "text", "diffusion", "generate", "flops", "eval", "storage", "pipeline"],
)
def test_help_everywhere(group: str) -> None:
    res = subprocess.run([sys.executable, "-m", "diffcxr.cli", group, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: diffcxr" in res.stdout


def test_stage_marker_is_ignored_when_an_output_is_gone(tmp_path: Path) -> None:
    from diffcxr.stages import StageDir

    stage = StageDir(str(tmp_path), "data")
    out = stage.path("manifest.parquet")
    storage.write_bytes(out, b"x")
    stage.complete("k1", {"manifest": out})
    assert stage.is_current("k1") and not stage.is_current("k2")
    storage.delete(out)
    assert not stage.is_current("k1")
    storage.write_text(stage.path("_stage.json"), "{not json")
    assert stage.marker() is None and not stage.is_current("k1")
