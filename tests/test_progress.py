"""The pipeline's progress lines: a first run's ETA comes from measured stage times, later runs' from their own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestration.progress import MEASURED, Progress

STAGES = ["data", "filter", "text", "diffusion", "eval", "register"]


def test_a_first_run_is_estimated_from_the_measured_times_and_says_when_a_stage_runs_over(tmp_path: Path) -> None:
    progress = Progress(str(tmp_path), "tiny", STAGES)
    assert progress.expected == MEASURED["tiny"]
    assert progress.remaining_after("eval") == MEASURED["tiny"]["register"]
    expected = MEASURED["tiny"]["diffusion"]
    assert f"of ~{int(expected) // 60}m" in progress.line("[4/6] diffusion", "diffusion", 10.0)
    assert "pipeline ETA" in progress.line("[4/6] diffusion", "diffusion", 10.0)
    assert "(longer than expected)" in progress.line("[4/6] diffusion", "diffusion", expected + 1)
    assert "longer" not in progress.line("[4/6] diffusion", "diffusion", expected - 1)


def test_a_later_run_is_estimated_from_the_times_this_run_root_recorded(tmp_path: Path) -> None:
    first = Progress(str(tmp_path), "tiny", STAGES, interval=0.01)
    with first.stage("[3/6] text", "text"):
        time.sleep(0.05)  # heartbeats while the stage runs
    first.record("text", 42.0)
    with pytest.raises(RuntimeError), first.stage("[4/6] diffusion", "diffusion"):
        raise RuntimeError("a failed stage is not recorded")
    again = Progress(str(tmp_path), "tiny", STAGES)
    assert again.expected["text"] == 42.0  # this run root's own time, not the measured default
    assert again.expected["diffusion"] == MEASURED["tiny"]["diffusion"]
    assert "(longer than expected)" in again.line("[3/6] text", "text", 43.0)


def test_a_profile_without_measurements_says_it_has_no_estimate(tmp_path: Path) -> None:
    progress = Progress(str(tmp_path), "my-site-profile", STAGES)
    assert "no estimate yet" in progress.line("[1/6] data", "data", 5.0)
    assert progress.remaining_after("data") is None
