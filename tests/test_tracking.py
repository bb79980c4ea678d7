"""Tracking round trips against a real MLflow server, and the local sqlite fallback."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from diffcxr.config import load_config
from diffcxr.errors import TrackingError
from diffcxr.tracking import Tracker, default_tracking_uri, flatten

pytestmark = pytest.mark.mlflow


def test_flatten_nests_with_dots_and_truncates() -> None:
    flat = flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "long": "x" * 7000})
    assert flat["a.b"] == "1" and flat["a.c.d"] == "[1, 2]"
    assert len(flat["long"]) == 6000


def test_run_params_metrics_figure_artifacts_round_trip(
    mlflow_server: str, experiment_name: str, tmp_path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracker = Tracker(mlflow_server, experiment_name)
    cfg = load_config("tiny")
    note = tmp_path / "note.txt"
    note.write_text("artefact body")
    with tracker.run("parent", tags={"diffcxr.stage": "pipeline"}) as parent:
        tracker.log_config(cfg)
        with tracker.run("child", nested=True, params={"lr": 1e-3, "sizes": {"depth": 4}}) as child:
            for step in range(3):
                tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            fig, ax = plt.subplots()
            ax.plot([0, 1], [1, 0])
            tracker.log_figure(fig, "figures/curve.png")
            plt.close(fig)
            tracker.log_artifact(str(note), "notes")
            tracker.log_dict({"k": 1}, "summary.json")

    client = MlflowClient(mlflow_server)
    p = client.get_run(parent.info.run_id)
    assert p.data.params["diffusion.depth"] == "4" and p.data.params["project.profile"] == "tiny"
    assert p.data.tags["diffcxr.stage"] == "pipeline"
    c = client.get_run(child.info.run_id)
    assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert c.data.params == {"lr": "0.001", "sizes.depth": "4"}
    history = client.get_metric_history(child.info.run_id, "loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([1.0, 0.5, 1 / 3])
    files = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"figures", "notes", "summary.json"} <= files
    local = mlflow.artifacts.download_artifacts(
        run_id=child.info.run_id,
        artifact_path="notes/note.txt",
        tracking_uri=mlflow_server,
        dst_path=str(tmp_path / "dl"),
    )
    assert Path(local).read_text() == "artefact body"
    cfg_yaml = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config.yaml")
    assert f"squeeze_tokens: {cfg.text.squeeze_tokens}" in cfg_yaml


def test_register_bundle_and_load_by_alias(mlflow_server: str, experiment_name: str, tmp_path: Path) -> None:
    tracker = Tracker(mlflow_server, experiment_name)
    name = f"diffcxr-test-{experiment_name}"
    weights = {}
    for version in (1, 2):
        state = {"w": torch.full((3, 2), float(version))}
        path = tmp_path / f"v{version}.pt"
        torch.save(state, path)
        weights[version] = state
        with tracker.run(f"train-v{version}"):
            got = tracker.register_bundle(
                name, {"weights": path}, {"latent_shape": [32, 8, 8], "step": version * 10}, alias="champion"
            )
        assert got == version
    assert tracker.alias_version(name, "champion") == 2
    folder = tracker.download_bundle(name, "champion", tmp_path / "champion")
    loaded = torch.load(folder / "v2.pt")
    assert torch.equal(loaded["w"], weights[2]["w"])
    assert json.loads((folder / "metadata.json").read_text())["step"] == 20
    tracker.set_alias(name, "champion", 1)
    assert tracker.load_bundle_metadata(name, "champion")["step"] == 10
    assert MlflowClient(mlflow_server).get_model_version(name, "1").tags["latent_shape"] == "[32, 8, 8]"
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert pyfunc.predict(["info"])[0]["metadata"]["step"] == 10
    assert tracker.alias_version(name, "no-such-alias") is None
    with pytest.raises(TrackingError, match="cannot load registered model"):
        tracker.download_bundle(name, "no-such-alias")


def test_register_needs_an_active_run(mlflow_server: str, experiment_name: str, tmp_path: Path) -> None:
    tracker = Tracker(mlflow_server, experiment_name)
    with pytest.raises(TrackingError, match="needs an active run"):
        tracker.register_bundle("x", {}, {})


def test_unreachable_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(
        TrackingError, match="MLflow tracking server at http://127.0.0.1:9 is unreachable .*nothing was run"
    ):
        Tracker("http://127.0.0.1:9", "x")


def test_local_sqlite_store_when_nothing_is_configured(home: Path, tmp_path: Path) -> None:
    uri = default_tracking_uri()
    assert uri == f"sqlite:///{home}/var/mlflow/mlflow.db"
    tracker = Tracker(None, "local-exp")
    assert tracker.tracking_uri == uri
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(1)}, path)
    with tracker.run("local"):
        tracker.log_metrics({"m": 1.0})
        version = tracker.register_bundle("local-model", {"weights": path}, {"k": "v"}, alias="champion")
    assert version == 1 and tracker.alias_version("local-model", "champion") == 1
    assert (home / "var" / "mlflow" / "artifacts").is_dir()
