"""Latent Noise Filtering Strategy: K-means → latent U-shaped autoencoder → discriminator.

Coarse to fine, on latents (N, C, h, w):

1. **K-means** on the (PCA-reduced) flattened latents; within each cluster, the
   samples closest to the centroid (``normal_quantile``) are *typical normal*.
   Score (a): distance to the nearest centroid, relative to that cluster's median.
2. **Latent autoencoder** (U-shaped convolutional, MSE) trained on typical normal
   only; its reconstruction error scores everyone. Score (b). The worst
   ``noisy_fraction`` of all samples are *typical noisy*.
3. **Discriminator** (conv/norm/activation blocks, adaptive pooling, linear)
   trained with BCE on typical normal (0) vs typical noisy (1). Score (c).

Decision: combined = √(percentile rank of (b) × discriminator probability); a
sample is dropped when combined ≥ ``threshold``, at most ``drop_fraction`` of all.
Both signals must agree, which is how supervision corrects reconstruction-error
mistakes near the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from torch import nn

from diffcxr.config import FilterConfig

TYPICAL_NORMAL, TYPICAL_NOISY, UNASSIGNED = "typical_normal", "typical_noisy", ""


class LatentUNet(nn.Module):
    """U-shaped conv autoencoder in latent space: two scales, a narrow bottleneck, one thin skip."""

    def __init__(self, channels: int, base: int) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(min(8, o), o), nn.SiLU())

        self.down1 = block(channels, base)
        self.down2 = nn.Sequential(
            nn.Conv2d(base, 2 * base, 3, stride=2, padding=1), nn.SiLU(), block(2 * base, 2 * base)
        )
        self.bottleneck = nn.Sequential(nn.Conv2d(2 * base, base // 2, 1), nn.SiLU(), nn.Conv2d(base // 2, 2 * base, 1))
        self.up = nn.ConvTranspose2d(2 * base, base, 4, stride=2, padding=1)
        self.skip = nn.Conv2d(base, base // 4, 1)  # thin: the skip must not carry the whole image
        self.out = nn.Sequential(block(base + base // 4, base), nn.Conv2d(base, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.down1(x)
        h2 = self.bottleneck(self.down2(h1))
        return self.out(torch.cat([self.up(h2), self.skip(h1)], dim=1))


class Discriminator(nn.Module):
    """conv → norm → activation blocks, adaptive average pooling, linear logit."""

    def __init__(self, channels: int, base: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, base, 3, padding=1),
            nn.GroupNorm(min(8, base), base),
            nn.LeakyReLU(0.2),
            nn.Conv2d(base, 2 * base, 3, stride=2, padding=1),
            nn.GroupNorm(min(8, 2 * base), 2 * base),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


@dataclass
class LNFSResult:
    kmeans_distance: np.ndarray
    recon_error: np.ndarray
    disc_score: np.ndarray
    combined: np.ndarray
    stage: np.ndarray  # typical_normal / typical_noisy / ""
    dropped: np.ndarray
    cluster: np.ndarray

    def reasons(self) -> list[str]:
        pct = rankdata(self.recon_error) / len(self.recon_error)
        return [
            f"LNFS: combined {c:.2f} (reconstruction error percentile {p:.2f}, discriminator {d:.2f})" if drop else ""
            for c, p, d, drop in zip(self.combined, pct, self.disc_score, self.dropped, strict=True)
        ]


def _normalise(latents: np.ndarray) -> np.ndarray:
    mean = latents.mean(axis=(0, 2, 3), keepdims=True)
    std = latents.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return ((latents - mean) / std).astype(np.float32)


def kmeans_stage(flat: np.ndarray, cfg: FilterConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(relative distance to the nearest centroid, cluster id, typical-normal mask)."""
    if cfg.pca_dims and flat.shape[1] > cfg.pca_dims and len(flat) > cfg.pca_dims:
        flat = PCA(cfg.pca_dims, random_state=seed).fit_transform(flat)
    k = max(1, min(cfg.kmeans_clusters, len(flat) // 10))
    algo = (
        MiniBatchKMeans(k, random_state=seed, n_init=3) if len(flat) > 20000 else KMeans(k, random_state=seed, n_init=4)
    )
    clusters = algo.fit_predict(flat)
    sizes = np.bincount(clusters, minlength=k)
    big = sizes >= max(2, cfg.min_cluster_fraction * len(flat))  # a small, tight group of odd images is no "norm"
    if not big.any():
        big[:] = True
    centres = algo.cluster_centers_[big]
    nearest_big = np.linalg.norm(flat[:, None, :] - centres[None], axis=2).argmin(1)
    dist = np.linalg.norm(flat - centres[nearest_big], axis=1)
    relative = np.zeros_like(dist)
    normal = np.zeros(len(flat), dtype=bool)
    for c in range(len(centres)):
        members = nearest_big == c
        if not members.any():
            continue
        median = np.median(dist[members]) or 1.0
        relative[members] = dist[members] / median
        in_big = members & big[clusters]
        if in_big.any():
            normal[in_big] = dist[in_big] <= np.quantile(dist[in_big], cfg.normal_quantile)
    return relative, clusters, normal


def _train(model: nn.Module, steps: int, lr: float, batch: int, sample, loss_fn, seed: int) -> None:  # noqa: ANN001
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for _ in range(steps):
        loss = loss_fn(model, *sample(batch, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def run_lnfs(latents: np.ndarray, cfg: FilterConfig, seed: int = 0) -> LNFSResult:
    """Score and decide for every latent (N, C, h, w)."""
    torch.manual_seed(seed)
    x_np = _normalise(latents)
    n, c = x_np.shape[:2]
    distance, clusters, normal = kmeans_stage(x_np.reshape(n, -1), cfg, seed)
    x = torch.from_numpy(x_np)

    lae = LatentUNet(c, cfg.lae_base_channels)
    normal_idx = torch.from_numpy(np.nonzero(normal)[0])

    def lae_batch(size: int, gen: torch.Generator) -> tuple[torch.Tensor]:
        return (x[normal_idx[torch.randint(len(normal_idx), (size,), generator=gen)]],)

    _train(
        lae,
        cfg.lae_steps,
        cfg.lr,
        min(cfg.batch_size, len(normal_idx)),
        lae_batch,
        lambda m, xb: nn.functional.mse_loss(m(xb), xb),
        seed,
    )
    with torch.no_grad():
        recon = torch.cat([((lae(x[i : i + 256]) - x[i : i + 256]) ** 2).mean((1, 2, 3)) for i in range(0, n, 256)])
    recon_np = recon.numpy()

    n_noisy = max(1, int(round(cfg.noisy_fraction * n)))
    noisy = np.zeros(n, dtype=bool)
    noisy[np.argsort(-recon_np)[:n_noisy]] = True
    normal &= ~noisy
    disc = Discriminator(c, cfg.lae_base_channels)
    pos, neg = torch.from_numpy(np.nonzero(noisy)[0]), torch.from_numpy(np.nonzero(normal)[0])

    def disc_batch(size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        half = max(1, size // 2)
        idx = torch.cat(
            [pos[torch.randint(len(pos), (half,), generator=gen)], neg[torch.randint(len(neg), (half,), generator=gen)]]
        )
        return x[idx], torch.cat([torch.ones(half), torch.zeros(half)])

    _train(
        disc,
        cfg.disc_steps,
        cfg.lr,
        cfg.batch_size,
        disc_batch,
        lambda m, xb, yb: nn.functional.binary_cross_entropy_with_logits(m(xb), yb),
        seed + 1,
    )
    with torch.no_grad():
        prob = torch.cat([torch.sigmoid(disc(x[i : i + 256])) for i in range(0, n, 256)]).numpy()

    combined = np.sqrt(rankdata(recon_np) / n * prob)
    dropped = combined >= cfg.threshold
    cap = int(np.floor(cfg.drop_fraction * n))
    if dropped.sum() > cap:
        keep_top = np.argsort(-combined)[:cap]
        dropped = np.zeros(n, dtype=bool)
        dropped[keep_top] = True
    stage = np.where(noisy, TYPICAL_NOISY, np.where(normal, TYPICAL_NORMAL, UNASSIGNED))
    return LNFSResult(distance, recon_np, prob, combined, stage, dropped, clusters)
