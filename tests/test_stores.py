"""Where a job keeps its files when nobody configured it: checked against the cluster it runs on, and the
project home a job finds from Ray's copy of the working directory (issue: "works on any Ray cluster")."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffcxr import paths
from diffcxr.config import load_config
from diffcxr.errors import ConfigError
from orchestration.stores import check_stores


def test_one_node_keeps_local_stores_and_says_so() -> None:
    cfg = load_config("tiny", ["project.run_root=/data/runs"])
    lines = check_stores(cfg, "sqlite:////data/mlflow.db", nodes=1)
    assert lines == [
        "single-node cluster: run folder on this node's disk: /data/runs",
        "single-node cluster: MLflow store only this node reaches: sqlite:////data/mlflow.db",
    ]


def test_several_nodes_refuse_local_stores_naming_what_to_set() -> None:
    cfg = load_config("tiny", ["project.run_root=/data/runs"])
    with pytest.raises(ConfigError, match="3 nodes.*project.run_root to an s3:// URI; tracking.uri .*MLflow server"):
        check_stores(cfg, "sqlite:////data/mlflow.db", nodes=3)
    shared = load_config("tiny", ["project.run_root=s3://runs/tiny"])
    with pytest.raises(ConfigError, match="set tracking.uri") as refused:  # a loopback server is one node's too
        check_stores(shared, "http://127.0.0.1:5000", nodes=2)
    assert "project.run_root" not in str(refused.value)
    assert check_stores(shared, "http://mlflow.diffcxr.svc:5000", nodes=2) == []


def test_a_job_in_rays_copy_of_the_working_dir_uses_the_installed_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = paths.installed_checkout()
    assert checkout is not None and (checkout / "diffcxr").is_dir()  # the suite runs from an editable install
    copy = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    copy.mkdir(parents=True)
    monkeypatch.delenv("DIFFCXR_HOME", raising=False)
    monkeypatch.chdir(copy)
    assert paths.in_ray_working_dir() and paths.home() == checkout
    assert paths.resolve_local("var/runs/tiny") == str(checkout / "var" / "runs" / "tiny")
    assert paths.shared_dir("weights", "taef2") == checkout.parent / "shared" / "weights" / "taef2"
    monkeypatch.chdir(tmp_path)  # anywhere else, relative paths stay relative to the cwd
    assert paths.home() == tmp_path
