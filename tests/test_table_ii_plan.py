"""The Table II benchmark trains the right runs in the right order and reads the paper's direction right.

The benchmark itself trains for hours (benchmarks/table_ii.py); what can go wrong silently is cheap to
check: which runs it makes, from which copied stages, with which seed and overrides, and how a module's
effect and its direction are computed from the rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import table_ii  # noqa: E402


def test_plan_reuses_the_reference_and_existing_runs_and_orders_what_copies_after_its_source(tmp_path: Path) -> None:
    reference, root, earlier = tmp_path / "ref", tmp_path / "table2", tmp_path / "made-by-hand"
    runs = table_ii.plan(reference, 0, [0, 1], ["unsqueezed", "no_lnfs", "full"], root, {("no_lnfs", 0): earlier})
    assert [(r.variant, r.seed) for r in runs] == [
        ("no_lnfs", 0), ("full", 0), ("unsqueezed", 0), ("no_lnfs", 1), ("full", 1), ("unsqueezed", 1),
    ]  # fmt: skip
    by = {(r.variant, r.seed): r for r in runs}
    assert by[("full", 0)].root == reference and by[("no_lnfs", 0)].root == earlier
    seed1 = by[("unsqueezed", 1)]
    assert seed1.root == root / "unsqueezed-seed1"
    assert seed1.copy_from == root / "full-seed1" and seed1.copy_stages == ["data", "filter"]
    command = seed1.command("small", ["eval.num_reports=10"])
    sets = [command[i + 1] for i, a in enumerate(command) if a == "--set"]
    assert sets == ["eval.num_reports=10", f"project.run_root={seed1.root}", "project.seed=1",
                    "text.squeeze_tokens=0"]  # fmt: skip  # the run's own root, seed and switch win
    assert command[-4:] == ["--from", "text", "--to", "diffusion"]
    assert by[("no_lnfs", 1)].copy_from == reference and by[("no_lnfs", 1)].copy_stages == ["data"]
    assert by[("unsqueezed", 0)].copy_from == reference  # seed 0's full run is the reference


def test_plan_refuses_a_variant_whose_source_run_nobody_makes(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="add 'full'"):
        table_ii.plan(tmp_path / "ref", 0, [1], ["unsqueezed"], tmp_path / "t", {})
    assert table_ii.plan(tmp_path / "ref", 0, [0], ["unsqueezed"], tmp_path / "t", {})  # the reference is seed 0's


def test_summary_reports_mean_spread_and_whether_each_module_helps_in_every_seed() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 11)) < 0.3).astype(float)  # the eval's 11 diseases
    informative = targets + rng.normal(0, 0.5, targets.shape)
    noise = rng.normal(0, 1, targets.shape)

    def row(auc: float, fid: float) -> dict[str, float]:
        return {"mAUC": auc, "fid_domain": fid}

    by_row = {
        "full": {0: row(0.85, 70.0), 1: row(0.81, 60.0)},
        "full without adapter": {0: row(0.66, 60.0), 1: row(0.68, 58.0)},
        "no_lnfs": {0: row(0.82, 64.0), 1: row(0.83, 66.0)},
    }
    scores = {(name, s): informative if name == "full" else noise for name in by_row for s in (0, 1)}
    out = table_ii.summarise(by_row, targets, scores, boot=50)
    assert out["rows"]["full"]["mAUC_mean"] == pytest.approx(0.83)
    assert out["rows"]["full"]["mAUC_spread"] == pytest.approx(0.04)
    adapter = out["modules"]["disease adapter (DKIM)"]
    assert adapter["paper_direction_mAUC_every_seed"] and not adapter["paper_direction_fid_every_seed"]
    assert adapter["by_seed"]["0"]["mAUC_gain_paired"]["mean"] > 0.2  # informative scores vs noise, same reports
    lnfs = out["modules"]["latent noise filtering (LNFS)"]
    assert lnfs["by_seed"]["1"]["mAUC_gain"] == pytest.approx(-0.02)
    assert not lnfs["paper_direction_mAUC_every_seed"]  # seed 1 goes the other way
    assert "squeezed text tokens (AVA-TLS)" not in out["modules"]  # no unsqueezed row measured
