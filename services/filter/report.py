"""What the filter shows people: a grid of dropped vs kept images, a 2-D embedding, detection metrics.

Detection metrics use the phantoms' injected ``noise_kind`` column, which the
filter never reads when deciding; they exist only to measure it.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from diffcxr import storage  # noqa: E402
from services.filter.lnfs import TYPICAL_NOISY, TYPICAL_NORMAL, LNFSResult  # noqa: E402

SCORES = {
    "kmeans_distance": "K-means distance",
    "recon_error": "latent-AE error",
    "disc_score": "discriminator",
    "combined": "full decision (combined)",
}


def image_grid(dropped_uris: list[str], kept_uris: list[str], tile: int = 96, per_row: int = 8) -> Image.Image:
    """Dropped images (highest score first) above a sample of kept ones."""
    font = ImageFont.load_default(size=14)
    sections = [("dropped (highest combined score first)", dropped_uris), ("kept (random sample)", kept_uris)]
    rows = sum(max(1, -(-len(u) // per_row)) for _, u in sections)
    sheet = Image.new("L", (per_row * tile, rows * tile + 22 * len(sections)), 255)
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, uris in sections:
        draw.text((4, y + 3), f"{title}: {len(uris)}", fill=0, font=font)
        y += 22
        for i, uri in enumerate(uris):
            try:
                img = Image.open(io.BytesIO(storage.read_bytes(uri))).convert("L").resize((tile, tile))
            except Exception:  # a tile that cannot be shown stays blank
                continue
            sheet.paste(img, ((i % per_row) * tile, y + (i // per_row) * tile))
        y += max(1, -(-len(uris) // per_row)) * tile
    return sheet


def embedding_figure(latents: np.ndarray, result: LNFSResult, method: str = "pca", seed: int = 0) -> plt.Figure:
    """2-D embedding of all latents, coloured by LNFS stage and decision."""
    flat = latents.reshape(len(latents), -1)
    if method == "tsne" and len(flat) > 5:
        from sklearn.manifold import TSNE

        xy = TSNE(2, random_state=seed, init="pca", perplexity=min(30, len(flat) - 1)).fit_transform(
            PCA(min(50, flat.shape[1], len(flat)), random_state=seed).fit_transform(flat)
        )
    else:
        xy = PCA(2, random_state=seed).fit_transform(flat)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    groups = [
        ("kept", ~result.dropped & (result.stage == ""), "#bbbbbb", "o"),
        ("typical normal (K-means)", (result.stage == TYPICAL_NORMAL) & ~result.dropped, "#1f77b4", "o"),
        ("typical noisy (latent AE)", (result.stage == TYPICAL_NOISY) & ~result.dropped, "#ff7f0e", "o"),
        ("dropped (final decision)", result.dropped, "#d62728", "x"),
    ]
    for label, mask, colour, marker in groups:
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=10 if marker == "o" else 28,
            c=colour,
            marker=marker,
            label=f"{label} ({int(mask.sum())})",
            linewidths=1,
        )
    ax.set_title(f"LNFS on {len(flat)} latents ({method.upper()})")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def detection_metrics(result: LNFSResult, noise_kinds: list[str | None]) -> dict[str, Any]:
    """AUROC of each score and precision/recall of the decision, overall and per noise kind."""
    noisy = np.array([k is not None for k in noise_kinds])
    out: dict[str, Any] = {"samples": len(noisy), "noisy": int(noisy.sum())}
    if noisy.all() or not noisy.any():
        return out
    for key in SCORES:
        out[f"auroc_{key}"] = round(float(roc_auc_score(noisy, getattr(result, key))), 4)
    tp = int((result.dropped & noisy).sum())
    k = int(result.dropped.sum())
    out["dropped"] = k
    out["precision"] = round(tp / max(1, k), 4)
    out["recall"] = round(tp / int(noisy.sum()), 4)
    # the same number of drops chosen by one score alone: does the full decision pick better ones?
    for key in ("kmeans_distance", "recon_error"):
        top = np.zeros(len(noisy), dtype=bool)
        top[np.argsort(-getattr(result, key))[:k]] = True
        out[f"precision_at_same_drops_{key}"] = round(float((top & noisy).sum()) / max(1, k), 4)
    per_kind: dict[str, Any] = {}
    clean = ~noisy
    for kind in sorted({k for k in noise_kinds if k}):
        mask = np.array([k == kind for k in noise_kinds])
        subset = mask | clean
        per_kind[kind] = {
            "count": int(mask.sum()),
            **{
                f"auroc_{key}": round(float(roc_auc_score(mask[subset], getattr(result, key)[subset])), 4)
                for key in SCORES
            },
            "recall": round(float((result.dropped & mask).sum() / mask.sum()), 4),
        }
    out["per_kind"] = per_kind
    return out
