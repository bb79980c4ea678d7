"""Filter service: autoencoders, decoding every image mode, the Ray Data encode run, LNFS, S3, MLflow figures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffcxr import manifest, storage
from diffcxr.autoencoders.frozen import SDVAEAutoencoder, load_autoencoder
from diffcxr.config import load_config
from diffcxr.contracts.images import UnreadableImage, decode_image
from diffcxr.errors import ConfigError, StorageError
from diffcxr.stages import StageCall
from services.filter.lnfs import run_lnfs


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- decoding
def test_decode_every_mode_or_say_why() -> None:
    gray = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    rgb = np.stack([gray] * 3, -1)
    sixteen = (gray.astype(np.uint16) * 200 + 1000).astype(np.uint16)
    palette = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    for data in (_png(gray), _png(rgb), _png(sixteen), buf.getvalue(), _png(np.stack([gray, gray], -1), "LA")):
        out = decode_image(data, 32)
        assert out.shape == (32, 32) and out.dtype == np.uint8 and out.std() > 10
    for data, reason in (
        (b"", "empty file"),
        (b"not an image at all", "not a readable image"),
        (_png(gray)[:80], "not a readable image"),
        (_png(gray[:8, :8]), "image too small"),
    ):
        with pytest.raises(UnreadableImage, match=reason):
            decode_image(data, 32)


# ----------------------------------------------------------------------------- autoencoders
def test_taef2_through_the_interface_records_id_and_scale() -> None:
    cfg = load_config("tiny")
    ae = load_autoencoder(cfg.autoencoder)
    assert ae.id.startswith("taef2@10a4e1021e89") and ae.latent_channels == 32 and ae.downsample == 8
    x = torch.rand(1, 3, 64, 64)
    z1 = ae.encode(x)
    scaled = load_autoencoder(load_config("tiny", ["autoencoder.scale_factor=2.0"]).autoencoder)
    assert torch.allclose(scaled.encode(x), 2 * z1, atol=1e-5)
    assert torch.allclose(scaled.decode(scaled.encode(x)), ae.decode(z1), atol=1e-5)


def test_missing_taef2_weights_error_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import diffcxr.autoencoders.taef2 as taef2

    monkeypatch.setattr(taef2, "default_weights_dir", lambda: tmp_path / "nothing")
    monkeypatch.delenv("DIFFCXR_TAEF2_DIR", raising=False)  # a developer's own weights folder must not hide the error
    cfg = load_config("tiny", [f"autoencoder.weights={tmp_path}", "autoencoder.allow_download=false"])
    with pytest.raises(ConfigError, match="TAEF2 weights not found .*allow_download=true"):
        load_autoencoder(cfg.autoencoder)


def test_taef2_download_that_cannot_connect_fails_fast_naming_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download is on by default (a real user's fallback); offline, it fails in seconds with the fix."""
    import socket
    import time

    import diffcxr.autoencoders.frozen as frozen
    import diffcxr.autoencoders.taef2 as taef2

    with socket.socket() as sock:  # a port nothing listens on: the connection is refused at once
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setattr(taef2, "default_weights_dir", lambda: tmp_path / "nothing")
    monkeypatch.delenv("DIFFCXR_TAEF2_DIR", raising=False)
    monkeypatch.setattr(frozen, "DOWNLOAD_CACHE", tmp_path / "cache")
    files = {name: (f"http://127.0.0.1:{closed}/{name}", sha) for name, (_, sha) in frozen.TAEF2_FILES.items()}
    monkeypatch.setattr(frozen, "TAEF2_FILES", files)
    cfg = load_config("tiny")
    assert cfg.autoencoder.allow_download is True
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="pinned download of http://127.0.0.1.*failed.*set autoencoder.weights or "
                                          "DIFFCXR_TAEF2_DIR"):  # fmt: skip
        load_autoencoder(cfg.autoencoder)
    assert time.perf_counter() - started < 10
    assert not list((tmp_path / "cache").glob("*.part"))  # nothing half-written left behind


def test_sd_vae_from_a_local_diffusers_folder(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    tiny = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )
    tiny.save_pretrained(tmp_path / "vae")
    cfg = load_config("paper", [f"autoencoder.weights={tmp_path / 'vae'}"])
    ae = load_autoencoder(cfg.autoencoder)
    assert isinstance(ae, SDVAEAutoencoder) and ae.scale_factor == pytest.approx(0.18215)
    z = ae.encode(torch.rand(2, 3, 64, 64))
    assert tuple(z.shape) == (2, 4, 8, 8)
    assert tuple(ae.decode(z).shape) == (2, 3, 64, 64)
    with pytest.raises(ConfigError, match="no diffusers AutoencoderKL folder"):
        load_autoencoder(load_config("paper", [f"autoencoder.weights={tmp_path / 'missing'}"]).autoencoder)


# ----------------------------------------------------------------------------- LNFS alone
def test_lnfs_separates_outliers_and_both_signals_are_needed() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (1, 8, 4, 4)).astype(np.float32)
    clean = base + 0.3 * rng.normal(0, 1, (190, 8, 4, 4)).astype(np.float32)
    noisy = rng.normal(0, 1.5, (10, 8, 4, 4)).astype(np.float32)
    latents = np.concatenate([clean, noisy])
    cfg = load_config("tiny", ["filter.lae_steps=200", "filter.disc_steps=200"]).filter
    result = run_lnfs(latents, cfg, seed=0)
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(190), np.ones(10)]
    assert roc_auc_score(truth, result.combined) > 0.95
    assert result.dropped[190:].sum() >= 8 and result.dropped[:190].sum() <= 2
    assert set(result.stage) <= {"typical_normal", "typical_noisy", ""}
    assert all(r.startswith("LNFS: combined") for r, d in zip(result.reasons(), result.dropped, strict=True) if d)


# ----------------------------------------------------------------------------- the stage on Ray Data
def _dataset_with_bad_files(root: str) -> str:
    """Phantoms (30% noisy) plus rows pointing at broken and odd files; returns the manifest URI."""
    from services.data.phantom.dataset import build_phantom_dataset

    cfg = load_config("tiny", ["data.max_reports=120", "data.noise_rate=0.12", "data.image_size=64"])
    table = build_phantom_dataset(cfg, root, workers=2).table
    rows = table.to_pylist()
    gray = (np.random.default_rng(1).random((80, 80)) * 255).astype(np.uint8)
    bad = {
        "corrupt": _png(gray)[:100],
        "nonimage": b"%PDF-1.4 not an image",
        "tiny": _png(gray[:6, :6]),
        "rgb": _png(np.stack([gray] * 3, -1)),
        "sixteen": _png(gray.astype(np.uint16) * 250),
    }
    template = dict(rows[0])
    for name, data in [*bad.items(), ("missing", None)]:
        uri = storage.join(root, "odd", f"{name}.png")
        if data is not None:
            storage.write_bytes(uri, data)
        rows.append(
            {
                **template,
                "sample_id": f"odd:{name}",
                "image_uri": uri,
                "status": "kept",
                "reason": None,
                "noise_kind": None,
            }
        )
    uri = storage.join(root, "manifest.parquet")
    manifest.write(manifest.to_table(rows), uri)
    return uri


def _check_filter_output(out: dict, manifest_uri: str) -> None:
    counts = out["summary"]["counts"]
    assert counts["in"] == counts["kept"] + counts["dropped"] + counts["quarantined"]
    assert counts["quarantined"] == 4 and counts["dropped"] >= 1
    rows = {r["sample_id"]: r for r in manifest.read(out["manifest"]).to_pylist()}
    assert len(rows) == manifest.read(manifest_uri).num_rows
    for name in ("corrupt", "nonimage", "tiny", "missing"):
        assert rows[f"odd:{name}"]["status"] == "quarantined" and rows[f"odd:{name}"]["reason"].startswith(
            "unreadable image"
        )
    assert rows["odd:rgb"]["status"] != "quarantined" and rows["odd:sixteen"]["status"] != "quarantined"
    dropped = [r for r in rows.values() if r["status"] == "filtered" and (r["reason"] or "").startswith("LNFS")]
    assert len(dropped) == counts["dropped"]
    scores = storage.read_parquet(out["scores"]).to_pylist()
    assert len(scores) == counts["in"]
    assert {s["decision"] for s in scores} == {"kept", "dropped", "quarantined"}
    evaluation = out["summary"]["evaluation"]  # detection quality is measured at scale in benchmarks/
    assert evaluation["noisy"] > 5 and evaluation["auroc_combined"] > 0.7
    latents = storage.read_parquet(out["latents"])
    assert set(latents.column("autoencoder_id").to_pylist()) == {out["summary"]["autoencoder_id"]}


@pytest.mark.ray
def test_filter_stage_on_ray_data_quarantines_bad_files(tmp_path: Path, ray_local: None) -> None:
    from services.filter import stage

    manifest_uri = _dataset_with_bad_files(str(tmp_path / "data"))
    cfg = load_config(
        "tiny", ["data.image_size=64", "filter.lae_steps=200", "filter.disc_steps=200", "filter.noisy_fraction=0.08"]
    )
    out = stage.run(cfg, StageCall(inputs={"manifest": manifest_uri}, out_uri=str(tmp_path / "filtered")))
    _check_filter_output(out, manifest_uri)
    assert storage.exists(str(tmp_path / "filtered" / "figures" / "embedding.png"))
    grid = Image.open(tmp_path / "filtered" / "figures" / "dropped_vs_kept.png")
    assert grid.size[0] == 8 * 96


@pytest.mark.ray
def test_filter_disabled_scores_every_row_and_drops_none(tmp_path: Path, ray_local: None) -> None:
    """The 'without LNFS' ablation: the switch used to change only the eval's table label, not the data."""
    from services.filter import stage

    manifest_uri = _dataset_with_bad_files(str(tmp_path / "data"))
    cfg = load_config("tiny", ["data.image_size=64", "filter.lae_steps=50", "filter.disc_steps=50",
                               "filter.noisy_fraction=0.08", "filter.enabled=false"])  # fmt: skip
    out = stage.run(cfg, StageCall(inputs={"manifest": manifest_uri}, out_uri=str(tmp_path / "unfiltered")))
    summary = out["summary"]
    assert summary["enabled"] is False and summary["counts"]["dropped"] == 0
    assert summary["counts"]["quarantined"] == 4  # unreadable images are still accounted for, never trained on
    assert summary["counts"]["kept"] == summary["counts"]["in"] - 4
    before = {r["sample_id"]: r["status"] for r in manifest.read(manifest_uri).to_pylist()}
    after = {r["sample_id"]: r["status"] for r in manifest.read(out["manifest"]).to_pylist()}
    assert after.keys() == before.keys()
    assert not [sid for sid, status in after.items() if status == "filtered" and before[sid] != "filtered"]
    scores = storage.read_parquet(out["scores"]).to_pylist()
    flagged = [s for s in scores if (s["reason"] or "").startswith("filter disabled; LNFS")]
    assert summary["lnfs_flagged"] >= 1  # LNFS still ran and would have dropped rows
    assert len(flagged) == summary["lnfs_flagged"] and {s["decision"] for s in flagged} <= {"kept"}


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.mlflow
def test_filter_on_s3_with_figures_in_mlflow(
    s3_bucket: str, ray_local: None, mlflow_server: str, experiment_name: str
) -> None:
    from mlflow.tracking import MlflowClient

    from diffcxr.tracking import Tracker
    from services.filter import stage

    manifest_uri = _dataset_with_bad_files(f"{s3_bucket}/data")
    cfg = load_config(
        "tiny", ["data.image_size=64", "filter.lae_steps=200", "filter.disc_steps=200", "filter.noisy_fraction=0.08"]
    )
    tracker = Tracker(mlflow_server, experiment_name)
    with tracker.run("filter") as run:
        out = stage.run(cfg, StageCall(tracker, {"manifest": manifest_uri}, f"{s3_bucket}/filtered"))
    _check_filter_output(out, manifest_uri)
    assert out["manifest"].startswith(s3_bucket) and storage.exists(f"{s3_bucket}/filtered/figures/embedding.png")
    client = MlflowClient(mlflow_server)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "filter")}
    assert {"filter/embedding.png", "filter/dropped_vs_kept.png", "filter/summary.json"} <= files
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["filter.quarantined"] == 4 and "filter.eval_auroc_combined" in metrics


def test_missing_manifest_fails_fast_naming_it(tmp_path: Path) -> None:
    from services.filter import stage

    missing = str(tmp_path / "nope" / "manifest.parquet")
    with pytest.raises(StorageError, match=f"cannot read '{missing}'"):
        stage.run(load_config("tiny"), StageCall(inputs={"manifest": missing}, out_uri=str(tmp_path / "out")))


def test_filter_module_entry_point_reports_errors_cleanly(tmp_path: Path) -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.filter",
            "--manifest",
            str(tmp_path / "x.parquet"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "cannot read" in res.stderr and "Traceback" not in res.stderr
