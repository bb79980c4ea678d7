"""The pipeline's own checks in-process: stage selection, a stage that needs an earlier one, the CLI, help
texts, stage markers. The whole pipeline with every URI on S3, its MLflow runs, skip-when-current and the
promotion gate run as the README's first command does, in tests/test_launch.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffcxr import storage
from diffcxr.config import load_config
from diffcxr.errors import DataError, DiffCXRError
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
    "promotion.min_mauc=null",  # a few training steps cannot reach the floor; test_register tests the floor
    "promotion.min_sd_over_chance=null",  # nor beat their chance control
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
    assert select_stages(None, "filter", "text") == ["filter", "text"]
    assert select_stages(None, None, "filter") == ["data", "filter"]
    with pytest.raises(DiffCXRError, match="--to: stage 'data' comes before --from stage 'text'"):
        select_stages(None, "text", "data")
    with pytest.raises(DiffCXRError, match="unknown stage 'fitler'; stages are data, filter"):
        select_stages("fitler", None)


def test_register_needs_the_stages_before_it(tmp_path: Path, home: Path) -> None:
    cfg = _cfg(str(tmp_path / "runs"), f"sqlite:///{tmp_path}/m.db", "exp")
    with pytest.raises(DataError, match="no completed diffusion stage under .*run the pipeline up to it first"):
        run_pipeline(cfg, ["register"])


def test_cli_pipeline_and_data_commands(tmp_path: Path, home: Path) -> None:
    run = [sys.executable, "-m", "orchestration.cli"]
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
def test_help_everywhere(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every group's --help, in-process (a fresh interpreter per group cost ~2 s each); the entry point
    itself is run as a subprocess once, below."""
    from orchestration.cli import build_parser

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([group, "--help"])
    assert done.value.code == 0 and "usage: diffcxr" in capsys.readouterr().out


def test_help_through_the_entry_point() -> None:
    command = [sys.executable, "-m", "orchestration.cli", "pipeline", "--help"]
    res = subprocess.run(command, capture_output=True, text=True)
    assert res.returncode == 0 and "usage: diffcxr pipeline" in res.stdout


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
