"""The one MLflow helper every stage uses: runs, params, metrics, figures, artefacts, registry.

Stages never call ``mlflow`` directly. That keeps three things uniform: where
runs go (a configured server, ``MLFLOW_TRACKING_URI``, or a local sqlite store
so nothing needs a server), how a config is recorded (flattened params plus the
full YAML as an artefact, so a run can be reproduced), and how a model is
registered (a state-dict bundle with its config, loadable by alias).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from diffcxr import storage
from diffcxr.errors import TrackingError
from diffcxr.paths import resolve_local

log = logging.getLogger(__name__)

#: MLflow refuses param values longer than this.
_MAX_PARAM_LEN = 6000
DEFAULT_LOCAL_STORE = "var/mlflow"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a sqlite store under ``var/mlflow`` (registry included)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(resolve_local(os.environ.get("DIFFCXR_MLFLOW_DIR", DEFAULT_LOCAL_STORE)))
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{"a.b": "value"}`` with values cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[name] = text[:_MAX_PARAM_LEN]
    return out


class StateDictBundle(mlflow.pyfunc.PythonModel):
    """A registered model as files (weights, config) plus metadata.

    Diff-CXR's models take dict inputs and are assembled by the loading stage
    (e.g. the generator joins text model, U-ViT and adapter), so the registry
    stores their state dicts and configs rather than a traced graph. ``predict``
    answers with the bundle's metadata so a generic MLflow client can inspect it.
    """

    def load_context(self, context: Any) -> None:
        self.artifacts = dict(context.artifacts)
        meta = Path(context.artifacts["metadata"])
        self.metadata = json.loads(meta.read_text())

    def predict(
        self, context: Any, model_input: list[str], params: dict[str, Any] | None = None
    ):  # no return hint: MLflow would infer a schema with Any
        """Answer each input (any string) with the bundle's metadata and artefact keys."""
        return [{"metadata": self.metadata, "artifacts": sorted(self.artifacts)} for _ in model_input]


def set_retry_policy(retries: int, backoff_s: int, timeout_s: float) -> None:
    """How MLflow's HTTP client retries a server it cannot reach: ``retries`` times, waiting ``backoff_s``,
    then twice that, and so on (urllib3's exponential backoff under MLflow's own request helper), each request
    given ``timeout_s``. MLflow's default (7 retries, factor 2) stalls a run for about four minutes per call."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(backoff_s)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(timeout_s)))


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any work, when an MLflow server URI does not answer (one request, no retries)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:  # it answered (a proxy or auth in front of /health): reachable
            return
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(
        f"MLflow tracking server at {tracking_uri} is unreachable ({reason}); nothing was run. Start it "
        "(bash infra/start_local.sh) or point tracking.uri / MLFLOW_TRACKING_URI at a running server"
    )


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (from an MLflow call) means the server could not be reached, after MLflow's retries."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    text = str(exc)
    return isinstance(exc, MlflowException) and any(
        marker in text
        for marker in ("Max retries exceeded", "Connection refused", "ConnectionError", "Read timed out", "timed out")
    )


def worker_client(tracking: Mapping[str, str]) -> MlflowClient:
    """The MLflow client of a Ray Train worker: per-step metrics are best effort (the stage logs the whole
    history when it ends), so a missing server costs one quick retry per step instead of minutes."""
    set_retry_policy(1, 1, 10)
    return MlflowClient(tracking["uri"])


def log_step_metrics(client: MlflowClient, run_id: str, prefix: str, record: Mapping[str, float]) -> None:
    """One training step's numbers (``record["step"]`` is the step) under ``prefix.``; never raises."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(record["step"])
    metrics = [Metric(f"{prefix}.{k}", float(v), now, step) for k, v in record.items() if k != "step"]
    try:
        client.log_batch(run_id, metrics=metrics)
    except Exception as exc:  # tracking trouble must not kill training
        log.warning("could not log %s metrics to MLflow: %s", prefix, type(exc).__name__)


class Tracker:
    """Tracking for one experiment. Safe to create in any process (Ray workers included)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "diffcxr") -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        check_reachable(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = MlflowClient(self.tracking_uri, self.tracking_uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else self._create_experiment()
        except MlflowException as exc:
            raise TrackingError(f"cannot reach MLflow at '{self.tracking_uri}': {exc}") from None
        except Exception as exc:  # connection errors surface as requests/urllib3 errors
            raise TrackingError(f"cannot reach MLflow at '{self.tracking_uri}': {exc}") from None

    def _create_experiment(self) -> str:
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            location = (Path(self.tracking_uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # created concurrently by another worker
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    @classmethod
    def from_config(cls, cfg: Any) -> Tracker:
        """Build from a ``DiffCXRConfig`` (its ``tracking`` section, retry policy included)."""
        set_retry_policy(cfg.tracking.retries, cfg.tracking.backoff_s, cfg.tracking.timeout_s)
        return cls(cfg.tracking.uri, cfg.tracking.experiment)

    # ------------------------------------------------------------------ runs
    @contextmanager
    def run(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        nested: bool = False,
        run_id: str | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        """Start (or resume, with ``run_id``) a run; nested runs hang under the active one."""
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else name,
            experiment_id=self.experiment_id,
            nested=nested,
            tags=dict(tags or {}),
        ) as active:
            if params:
                self.log_params(params)
            yield active

    def worker_target(self) -> dict[str, str] | None:
        """Where a Ray Train worker logs its step metrics: this server and the active run (None outside one).
        Workers get it as plain data and open their own client (:func:`worker_client`)."""
        active = mlflow.active_run()
        return {"uri": self.tracking_uri, "run_id": active.info.run_id} if active else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = list(flat.items())
        for start in range(0, len(items), 100):  # MLflow's batch limit
            mlflow.log_params(dict(items[start : start + 100]))

    def log_config(self, cfg: Any) -> None:
        """Record a whole ``DiffCXRConfig``: flattened params plus ``config.yaml``."""
        self.log_params(cfg.to_dict())
        mlflow.log_text(cfg.to_yaml(), "config.yaml")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        mlflow.log_figure(figure, artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        """A PIL image or numpy array as a PNG artefact."""
        mlflow.log_image(image, artifact_file=artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        mlflow.log_dict(dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_artifact(self, uri: str, artifact_path: str | None = None) -> None:
        """Log a file given by URI (local or s3://); remote files are staged through a temp dir."""
        local = storage.local_path(uri)
        if local is not None and local.exists():
            mlflow.log_artifact(str(local), artifact_path)
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp, Path(uri.rstrip("/")).name)
            target.write_bytes(storage.read_bytes(uri))
            mlflow.log_artifact(str(target), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        mlflow.set_tags(dict(tags))

    # ------------------------------------------------------------------ registry
    def register_bundle(
        self,
        name: str,
        files: Mapping[str, str | Path],
        metadata: Mapping[str, Any],
        alias: str | None = None,
        python_model: mlflow.pyfunc.PythonModel | None = None,
    ) -> int:
        """Log files (weights, config, ...) as a model in the active run and register it.

        ``metadata`` (JSON-able: config, latent shape, versions of the parts it
        depends on) is stored beside the files and as version tags. Returns the
        new registry version; with ``alias`` that version also gets the alias.
        """
        if mlflow.active_run() is None:
            raise TrackingError("register_bundle needs an active run (use Tracker.run)")
        with tempfile.TemporaryDirectory() as tmp:
            meta_path = Path(tmp, "metadata.json")
            meta_path.write_text(json.dumps(dict(metadata), indent=2, sort_keys=True, default=str))
            artifacts = {"metadata": str(meta_path)}
            for key, path in files.items():
                local = storage.local_path(str(path))
                if local is None:
                    local = Path(tmp, Path(str(path)).name)
                    local.write_bytes(storage.read_bytes(str(path)))
                artifacts[key] = str(local)
            with warnings.catch_warnings():  # MLflow nags about predict() type hints; bundles have no schema
                warnings.simplefilter("ignore", UserWarning)
                info = mlflow.pyfunc.log_model(
                    name=name,
                    python_model=python_model or StateDictBundle(),
                    artifacts=artifacts,
                    registered_model_name=name,
                    pip_requirements=["diffcxr"],
                )
        version = int(info.registered_model_version)
        for key, value in flatten(metadata).items():
            self.client.set_model_version_tag(name, str(version), key, value[:5000])
        if alias:
            self.set_alias(name, alias, version)
        log.info("registered %s version %s%s", name, version, f" as @{alias}" if alias else "")
        return version

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def alias_version(self, name: str, alias: str) -> int | None:
        """Version behind ``name@alias``, or None when the model or alias does not exist."""
        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def download_bundle(self, name: str, alias_or_version: str | int, dst: str | Path | None = None) -> Path:
        """Download a registered bundle's files; returns the folder holding them by artefact key."""
        ref = (
            f"models:/{name}/{alias_or_version}"
            if isinstance(alias_or_version, int) or str(alias_or_version).isdigit()
            else f"models:/{name}@{alias_or_version}"
        )
        target = Path(dst or tempfile.mkdtemp(prefix="diffcxr-model-"))
        try:
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(target)))
        except MlflowException as exc:
            raise TrackingError(f"cannot load registered model '{ref}': {exc}") from None
        folder = root / "artifacts"
        return folder if folder.is_dir() else root

    def load_bundle_metadata(self, name: str, alias_or_version: str | int) -> dict[str, Any]:
        folder = self.download_bundle(name, alias_or_version)
        try:
            return json.loads((folder / "metadata.json").read_text())
        finally:
            shutil.rmtree(folder.parent if folder.name == "artifacts" else folder, ignore_errors=True)
