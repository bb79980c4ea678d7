"""Where a pipeline run keeps its files and its tracking, checked against the cluster it runs on.

With nothing configured, a run keeps both on local disk: the run root under the project home and a sqlite
MLflow store. That is right on a single-node cluster (a laptop, one VM) and the run says so in one line. On
a multi-node cluster other nodes' workers would write checkpoints and latents to their own disks and could
not reach a sqlite file or a loopback MLflow server, so the run refuses before any work, naming what to set.
"""

from __future__ import annotations

from urllib.parse import urlparse

from diffcxr.config import DiffCXRConfig
from diffcxr.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def run_root_is_shared(run_root: str) -> bool:
    """An object store (``s3://…``) every node reaches; a local path is one node's disk."""
    return "://" in run_root and not run_root.startswith("file://")


def tracking_is_shared(tracking_uri: str) -> bool:
    """An MLflow server on a host other nodes can reach (not sqlite, a file store or loopback)."""
    parsed = urlparse(tracking_uri)
    return parsed.scheme in ("http", "https", "databricks") and (parsed.hostname or "") not in LOOPBACK


def check_stores(cfg: DiffCXRConfig, tracking_uri: str, nodes: int) -> list[str]:
    """The lines to print about stores kept on local disk (single node), or a ConfigError (several nodes)."""
    local = []
    if not run_root_is_shared(cfg.run_root):
        local.append(("project.run_root", f"run folder on this node's disk: {cfg.run_root}", "an s3:// URI"))
    if not tracking_is_shared(tracking_uri):
        local.append(("tracking.uri (or MLFLOW_TRACKING_URI)", f"MLflow store only this node reaches: {tracking_uri}",
                      "an MLflow server the nodes reach"))  # fmt: skip
    if nodes > 1 and local:
        needed = "; ".join(f"{key} to {what}" for key, _, what in local)
        raise ConfigError(
            f"this Ray cluster has {nodes} nodes, and workers on other nodes cannot use one node's disk: set {needed} "
            "(docs/DEPLOY.md, 'What a cluster needs')"
        )
    return [f"single-node cluster: {line}" for _, line, _ in local]
