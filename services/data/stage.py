"""The data stage as a unit the CLI and the pipeline run: build, write, track, skip if current."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pyarrow.fs as pafs

from diffcxr import manifest, storage
from diffcxr.config import DiffCXRConfig
from diffcxr.stages import DEFAULT_CALL, StageCall, content_key
from services.data import iu_xray
from services.data.build import build_labeled_manifest

log = logging.getLogger(__name__)
STAGE = "data"


def _tree_identity(uri: str) -> list[tuple[str, int, float]]:
    """(name, size, mtime) of the top-level files of a folder: cheap change detection."""
    fs, path = storage.resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted((i.base_name, i.size or 0, i.mtime_ns or 0) for i in infos)


def source_identity(cfg: DiffCXRConfig) -> dict[str, Any]:
    """What identifies the input data, so the stage re-runs when the data changes."""
    if cfg.data.source == "iu_xray_wheel":
        try:
            xrv = version("torchxrayvision")
        except PackageNotFoundError:
            xrv = None
        tgz = iu_xray.wheel_data_dir() / "NLMCXR_reports.tgz"
        return {"torchxrayvision": xrv, "reports_tgz_bytes": tgz.stat().st_size}
    root = cfg.data.root or ""
    ident: dict[str, Any] = {"root": root, "files": _tree_identity(root)}
    if cfg.data.source == "iu_xray":
        ident["xml"] = _tree_identity(storage.join(root, "ecgen-radiology"))
    return ident


def stage_key(cfg: DiffCXRConfig) -> str:
    from diffcxr.labeling.rules import VERSION as RULES_VERSION
    from services.data.phantom.render import RENDERER_VERSION

    config = cfg.to_dict()
    renderer = RENDERER_VERSION if cfg.data.images == "phantom" else None
    return content_key(STAGE, config["data"], config["labeler"], RULES_VERSION, renderer, source_identity(cfg))


def run(cfg: DiffCXRConfig, call: StageCall = DEFAULT_CALL) -> dict[str, Any]:
    """Build and write the manifest under ``<run_root>/data/`` (or ``out_uri``, without stage bookkeeping);
    skip when inputs and config are unchanged. The data stage has no upstream: its source is ``cfg.data``.

    Returns ``{"skipped": bool, "manifest": uri, "summary": {...}, "key": ...}``.
    The manifest itself is not copied into MLflow: it holds report text, which
    stays in the configured storage; MLflow gets its URI and the counts.
    """
    call.paths({})  # no upstream: the source is cfg.data
    stage, out = call.folder(cfg.run_root, STAGE)
    tracker = call.tracker
    key = stage_key(cfg)
    reused = call.reuse(stage, key)
    if reused:
        log.info("data stage is current (key %s): skipped", key)
        return reused
    if cfg.data.images == "phantom":
        from services.data.phantom.dataset import build_phantom_dataset

        result = build_phantom_dataset(cfg, out)
    else:
        result = build_labeled_manifest(cfg)
    uri = storage.join(out, "manifest.parquet")
    manifest.write(result.table, uri)
    summary = result.summary
    if tracker is not None:
        config = cfg.to_dict()
        tracker.log_params(
            {"data": config["data"], "labeler": config["labeler"], "data.manifest_uri": uri, "data.key": key}
        )
        tracker.log_metrics(
            {
                "data.rows": summary["rows"],
                **{f"data.rows_{status}": n for status, n in summary["status"].items()},
                **{f"data.kept_{split}": n for split, n in summary["kept_by_split"].items()},
                "data.reports": summary["reports"],
                "data.label_seconds": summary["labels"]["seconds"],
                **{
                    "data.positive_" + name.lower().replace(" ", "_"): n
                    for name, n in summary["labels"]["positive_rows"].items()
                },
            }
        )
        tracker.log_dict(summary, "data/manifest_summary.json")
    if stage:
        stage.complete(key, {"manifest": uri}, {"summary": summary})
    log.info("data stage wrote %s (%d rows)", uri, summary["rows"])
    return {"skipped": False, "manifest": uri, "summary": summary, "key": key}
