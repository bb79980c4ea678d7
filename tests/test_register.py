"""The promotion gate: the rule on numbers, then the register stage against a real MLflow registry.

The registry tests give the stage what the diffusion and eval stages leave in a
run folder (their markers, the eval ``results.json``, a registered generator
version tagged with its stage key) with chosen metrics, so every branch of the
gate (first champion, tie, win, FID guard, incomparable champion, skip when
current) is exercised in seconds. The whole pipeline, gate included, runs in
``test_launch.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from diffcxr import storage
from diffcxr.config import PromotionConfig, load_config
from diffcxr.stages import StageCall, StageDir
from diffcxr.tracking import Tracker
from services.register import stage as register
from services.register.gate import decide

RULES = PromotionConfig()


def test_the_rule_on_numbers() -> None:
    assert decide({"mAUC": 0.6}, None, RULES).promote  # no champion: anything at or above the floor wins
    for noise in (0.47, None):  # below the absolute floor, or unmeasured: never champion, even with none yet
        refused = decide({"mAUC": noise, "fid_domain": 5}, None, RULES)
        assert not refused.promote and refused.below_floor and "below the floor 0.6" in refused.reason
        assert decide({"mAUC": noise}, {"mAUC": 0.3}, RULES).below_floor
    assert decide({"mAUC": None}, None, PromotionConfig(min_mauc=None)).promote  # the floor can be switched off
    chance = {"mAUC_chance_mean": 0.5, "mAUC_chance_sd": 0.06}  # a small eval set: chance reaches 0.62 at 2 sd
    lucky = decide({"mAUC": 0.61, **chance}, None, RULES)
    assert not lucky.promote and lucky.below_floor and "within 2 sd of chance" in lucky.reason
    assert decide({"mAUC": 0.63, **chance}, None, RULES).promote
    assert decide({"mAUC": 0.61, **chance}, None, PromotionConfig(min_sd_over_chance=None)).promote
    assert decide({"mAUC": 0.61, "mAUC_chance_mean": None, "mAUC_chance_sd": None}, None, RULES).promote
    tie = decide({"mAUC": 0.6, "fid_domain": 5}, {"mAUC": 0.6, "fid_domain": 5}, RULES, "champion v1")
    assert not tie.promote and tie.reason == "mAUC 0.6000 vs champion v1's 0.6000: not higher"
    assert decide({"mAUC": 0.61, "fid_domain": 5}, {"mAUC": 0.6, "fid_domain": 5}, RULES).promote
    margin = PromotionConfig(min_improvement=0.05)
    assert not decide({"mAUC": 0.64}, {"mAUC": 0.6}, margin).promote
    assert decide({"mAUC": 0.66}, {"mAUC": 0.6}, margin).promote
    drift = decide({"mAUC": 0.7, "fid_domain": 13.0}, {"mAUC": 0.6, "fid_domain": 10.0}, RULES)
    assert not drift.promote and "more than 25% above" in drift.reason
    assert decide({"mAUC": 0.7, "fid_domain": 13.0}, {"mAUC": 0.6, "fid_domain": 10.0},
                  PromotionConfig(max_fid_regression=None)).promote  # fmt: skip
    fid = PromotionConfig(metric="fid_domain")
    assert decide({"fid_domain": 9.0, "mAUC": 0.7}, {"fid_domain": 10.0}, fid).promote
    assert not decide({"fid_domain": 11.0, "mAUC": 0.7}, {"fid_domain": 10.0}, fid).promote
    assert decide({"fid_domain": 1.0, "mAUC": 0.5}, {"fid_domain": 10.0}, fid).below_floor  # whatever the metric
    assert not decide({"mAUC": None}, {"mAUC": 0.5}, RULES).promote
    assert decide({"mAUC": 0.65}, {"mAUC": None}, RULES).promote


def _trained_run(root: Path, tracker: Tracker, name: str, mauc: float | None, fid: float, eval_set: str = "a"):
    """A run folder as the diffusion and eval stages leave it, with a registered generator version."""
    run_root = str(root / uuid.uuid4().hex[:8])
    key = uuid.uuid4().hex[:16]
    weights = root / "weights.bin"
    weights.write_bytes(b"w")
    with tracker.run("diffusion"):
        version = tracker.register_bundle(
            name, {"bundle": weights}, {"kind": "generator", "stage_key": key, "uvit_sha256": "ab" * 32},
            alias="candidate",
        )  # fmt: skip
    generator = storage.join(run_root, "diffusion", "generator")
    StageDir(run_root, "diffusion").complete(
        key, {"generator": generator}, {"summary": {"registered": {"generator": {"name": name, "version": version}}}}
    )
    results = {
        "model": generator,
        "provenance": {"model": {"uvit": "abababababab"}},
        "dataset": {"manifest_sha256": eval_set, "eval_reports": 8, "images_per_report": 1, "label_policy": "p"},
        "config": {"steps": 25, "guidance": 3.0, "num_reports": 64},
        "classifier": {"kind": "own-densenet121", "train_data": "t"},
        "models": {"model": {"mAUC": mauc, "fid_domain": fid}},
    }
    evaluation = StageDir(run_root, "eval")
    storage.write_text(evaluation.path("results.json"), json.dumps(results))
    evaluation.complete(uuid.uuid4().hex[:16], {"results": evaluation.path("results.json")})
    return run_root, version


@pytest.mark.mlflow
def test_register_stage_in_a_real_registry(tmp_path: Path, mlflow_server: str, experiment_name: str) -> None:
    name = f"gen-{uuid.uuid4().hex[:8]}"
    tracker = Tracker(mlflow_server, experiment_name)

    def gate(run_root: str, *extra: str) -> dict:
        cfg = load_config("tiny", [f"project.run_root={run_root}", f"tracking.uri={mlflow_server}",
                                   f"tracking.experiment={experiment_name}", *extra])  # fmt: skip
        with tracker.run("register"):
            return register.run(cfg, StageCall(tracker))

    noise_root, noise = _trained_run(tmp_path, tracker, name, 0.4673, 9334.0)  # today's tiny: chance level
    outcome = gate(noise_root)
    assert outcome["alias"] == "candidate" and not outcome["promoted"]
    assert outcome["reason"].startswith("mAUC 0.4673 is below the floor 0.6 (promotion.min_mauc)")
    assert tracker.alias_version(name, "champion") is None and tracker.alias_version(name, "candidate") == noise
    assert tracker.client.get_model_version(name, str(noise)).tags["promotion.decision"] == "candidate"

    first_root, first = _trained_run(tmp_path, tracker, name, 0.60, 10.0)
    outcome = gate(first_root)
    assert outcome["alias"] == "champion" and outcome["reason"].startswith("no champion yet")
    assert tracker.alias_version(name, "champion") == first

    tie_root, tie = _trained_run(tmp_path, tracker, name, 0.60, 9.0)
    outcome = gate(tie_root)
    assert outcome["alias"] == "challenger" and outcome["previous_champion"] == first
    assert outcome["reason"] == f"mAUC 0.6000 vs champion v{first}'s 0.6000: not higher"
    assert tracker.alias_version(name, "champion") == first and tracker.alias_version(name, "challenger") == tie
    version = tracker.client.get_model_version(name, str(tie))
    assert version.description == f"challenger: {outcome['reason']}"
    assert version.tags["promotion.decision"] == "challenger" and version.tags["eval.mAUC"] == "0.6"
    assert gate(tie_root)["skipped"] is True  # nothing changed: the recorded decision stands

    drift_root, _ = _trained_run(tmp_path, tracker, name, 0.70, 30.0)
    outcome = gate(drift_root)
    assert outcome["alias"] == "challenger" and "domain FID 30.0000 is more than 25% above" in outcome["reason"]

    better_root, better = _trained_run(tmp_path, tracker, name, 0.70, 11.0)
    outcome = gate(better_root)
    assert outcome["alias"] == "champion" and outcome["reason"] == f"mAUC 0.7000 beats champion v{first}'s 0.6000"
    assert tracker.alias_version(name, "champion") == better
    assert gate(tie_root)["skipped"] is False  # the champion it lost to is gone: decided again, against v{better}

    other_root, _ = _trained_run(tmp_path, tracker, name, 0.99, 1.0, eval_set="b")
    outcome = gate(other_root, "promotion.reevaluate_champion=false")
    assert outcome["alias"] == "challenger" and "evaluated on another evaluation set" in outcome["reason"]
    assert tracker.alias_version(name, "champion") == better

    # an operator rolls back to the first champion, with the reason on the version (the CLI, as a user would)
    res = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "promote", "--name", name, "--version", str(first), "--reason",
         "rollback drill", "--set", f"tracking.uri={mlflow_server}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["alias"] == "champion" and tracker.alias_version(name, "champion") == first
    rolled_back = tracker.client.get_model_version(name, str(first))
    assert rolled_back.description == "champion (manual): rollback drill"
    assert rolled_back.tags["promotion.reason"] == "manual: rollback drill"
    res = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "promote", "--name", name, "--version", "999", "--reason", "x",
         "--set", f"tracking.uri={mlflow_server}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and f"version: {name} has no version 999" in res.stderr and "Traceback" not in res.stderr


def test_register_refuses_results_of_another_model(tmp_path: Path, mlflow_server: str, experiment_name: str) -> None:
    tracker = Tracker(mlflow_server, experiment_name)
    run_root, _ = _trained_run(tmp_path, tracker, f"gen-{uuid.uuid4().hex[:8]}", 0.6, 1.0)
    results_uri = StageDir(run_root, "eval").path("results.json")
    results = json.loads(storage.read_text(results_uri))
    storage.write_text(results_uri, json.dumps({**results, "model": "s3://elsewhere/generator"}))
    cfg = load_config("tiny", [f"project.run_root={run_root}", f"tracking.uri={mlflow_server}"])
    with tracker.run("register"), pytest.raises(Exception, match="are for 's3://elsewhere/generator', not for"):
        register.run(cfg, StageCall(tracker))
