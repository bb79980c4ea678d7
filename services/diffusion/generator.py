"""The generator: report text → labels → disease sentence → squeezed contexts → denoiser + adapter → image.

A generator bundle is one folder that pins every part: ``text/`` (the text
model bundle), ``uvit/``, ``adapter/`` (optional), ``autoencoder/`` (the
decoder weights), and ``generator.json`` with the sha256 of each, the
autoencoder id, latent shape and scale factor, the labeler and the sampler
defaults. It is registered in MLflow as the pyfunc ``diffcxr-generator``:
``mlflow.pyfunc.load_model("models:/diffcxr-generator@champion").predict(df)``
with columns ``report`` and ``seed`` (optional ``steps``, ``guidance``,
``disease_sentence``) returns one PNG per row.

Same (report, seed, model, steps, guidance) → same image for the same precision, torch thread count and
instruction set (:mod:`diffcxr.precision`; all three are recorded in every image): the starting noise comes
from a generator seeded per image and the sampler is deterministic.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from diffcxr.bundle import SPEC_FILE, provenance, read_bundle_spec
from diffcxr.config import AutoencoderConfig, LabelerConfig, SamplingConfig
from diffcxr.contracts import outputs
from diffcxr.contracts.outputs import to_uint8
from diffcxr.errors import ConfigError, DataError
from diffcxr.hashing import sha256_file
from diffcxr.precision import runtime_record
from services.diffusion.parts import DecoderPart, DenoiserPart
from services.diffusion.sampling import check_request
from services.diffusion.weights import ADAPTER, UVIT, read_spec
from services.text import TextPart

log = logging.getLogger(__name__)


@dataclass
class GeneratedImage:
    pixels: np.ndarray  # (H, W) uint8, grayscale
    seed: int
    disease_sentence: str
    steps: int
    guidance: float
    runtime: dict[str, Any]  # precision, threads, isa: what the exact pixels depend on besides the request

    def png(self, provenance: dict[str, Any]) -> bytes:
        """PNG bytes marked synthetic, with the seed and model versions (never the report text)."""
        meta = {"seed": self.seed, "steps": self.steps, "guidance": self.guidance,
                "disease_sentence": self.disease_sentence, "models": provenance, "runtime": self.runtime}  # fmt: skip
        return outputs.png(self.pixels, meta)


def build_bundle(
    folder: str | Path,
    text_bundle: str | Path,
    uvit_folder: str | Path,
    adapter_folder: str | Path | None,
    autoencoder: AutoencoderConfig,
    labeler: LabelerConfig,
    sampling: SamplingConfig,
    image_size: int,
    versions: dict[str, Any] | None = None,
) -> Path:
    """Assemble a self-contained generator folder (copies of every part) and its ``generator.json``."""
    from diffcxr.autoencoders.frozen import find_taef2_weights, load_autoencoder

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copytree(text_bundle, folder / "text")
    shutil.copytree(uvit_folder, folder / UVIT)
    if adapter_folder is not None:
        shutil.copytree(adapter_folder, folder / ADAPTER)
    ae_dir = folder / "autoencoder"
    source = find_taef2_weights(autoencoder) if autoencoder.kind == "taef2" else _sd_vae_folder(autoencoder)
    shutil.copytree(source, ae_dir, ignore=shutil.ignore_patterns("*.part"))
    ae = load_autoencoder(autoencoder.model_copy(update={"weights": str(ae_dir)}))
    uvit_spec = read_spec(folder / UVIT, UVIT)
    text_spec = json.loads((folder / "text" / "text_model.json").read_text())
    spec = {
        "format": 1,
        "image_size": image_size,
        "text": {"weights_sha256": text_spec.get("weights_sha256"), "context_shape": uvit_spec["context_shape"]},
        "uvit": {"weights_sha256": uvit_spec["weights_sha256"], "config": uvit_spec["config"]},
        "adapter": (
            {"weights_sha256": read_spec(folder / ADAPTER, ADAPTER)["weights_sha256"]} if adapter_folder else None
        ),
        "autoencoder": {
            **autoencoder.model_dump(mode="json", exclude={"weights", "allow_download"}),
            "id": ae.id,
            "scale_factor": ae.scale_factor,
            "latent_shape": list(uvit_spec["latent_shape"]),
            "files": {p.name: sha256_file(p) for p in sorted(ae_dir.iterdir()) if p.is_file()},
        },
        "labeler": {"kind": "rules", "uncertain_policy": labeler.uncertain_policy},
        "sampling": sampling.model_dump(mode="json"),
        "schedule": uvit_spec["schedule"],
        "latent_stats": uvit_spec.get("latent_stats"),
        "registry": versions or {},
    }
    if uvit_spec.get("autoencoder_id") and uvit_spec["autoencoder_id"] != ae.id:
        raise DataError(f"U-ViT was trained on latents of '{uvit_spec['autoencoder_id']}' but the decoder is '{ae.id}'")
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
    return folder


def build_initial_bundle(cfg: Any, folder: str | Path) -> Path:
    """A generator bundle of the configured architecture with freshly initialised weights (seeded by
    ``project.seed``): the real text encoder, squeezer, U-ViT, zero-initialised adapter and the real
    decoder, none of them trained together. It lets a deployment (and its tests) be exercised end to
    end before any training has run; its images are not meaningful radiographs."""
    import tempfile

    from diffcxr.autoencoders.frozen import load_autoencoder
    from services.diffusion.adapter import AdaptedUViT
    from services.diffusion.uvit import UViT, uvit_config
    from services.diffusion.weights import model_meta, save_model
    from services.text import ReportEncoder

    torch.manual_seed(cfg.project.seed)
    with tempfile.TemporaryDirectory() as tmp:
        text = ReportEncoder.from_config(cfg.text, cfg.data.image_size)
        text_dir = text.save_bundle(Path(tmp, "text"))
        net_cfg = uvit_config(cfg, text.context_shape)
        uvit = UViT(net_cfg)
        ae_id = load_autoencoder(cfg.autoencoder).id
        meta = {**model_meta(cfg, net_cfg, text.context_shape, ae_id), "trained_steps": 0}
        uvit_dir = save_model(uvit, Path(tmp, UVIT), UVIT, meta)
        adapter_dir = None
        if cfg.adapter.enabled:
            adapter = AdaptedUViT(uvit).adapter
            uvit_sha = read_spec(uvit_dir, UVIT)["weights_sha256"]
            adapter_dir = save_model(adapter, Path(tmp, ADAPTER), ADAPTER, {**meta, "uvit_sha256": uvit_sha})
        return build_bundle(
            folder, text_dir, uvit_dir, adapter_dir, cfg.autoencoder, cfg.labeler, cfg.sampling,
            cfg.data.image_size, versions={"initial_weights": True},
        )  # fmt: skip


def _sd_vae_folder(autoencoder: AutoencoderConfig) -> Path:
    import os

    folder = autoencoder.weights or os.environ.get("DIFFCXR_SDVAE_DIR")
    if not folder or not Path(folder, "config.json").is_file():
        raise ConfigError(f"autoencoder.weights: no diffusers AutoencoderKL folder at '{folder}' to put in the bundle")
    return Path(folder)


class Generator:
    """Loads a generator bundle once; turns reports and seeds into images (the three parts in one process)."""

    def __init__(self, folder: str | Path, threads: int | None = None, precision: str | None = None) -> None:
        """``precision``: auto/fp32/bf16 for the denoiser and decoder; None takes the bundle's default (auto)."""
        if threads:
            torch.set_num_threads(threads)
        self.folder = Path(folder)
        self.spec = read_bundle_spec(folder)
        self.text = TextPart(folder)
        self.denoiser = DenoiserPart(folder, precision)
        self.decoder = DecoderPart(folder, self.denoiser.precision)
        self.sampling = self.denoiser.sampling
        self.precision = self.denoiser.precision

    @property
    def has_adapter(self) -> bool:
        return bool(self.spec.get("adapter"))

    def provenance(self) -> dict[str, Any]:
        return provenance(self.spec)

    def sentences_for(self, reports: list[str]) -> list[str]:
        """The disease sentence of each report (rules labeler, labels by name)."""
        return self.text.labels_and_sentences(reports)[1]

    def generate(
        self,
        reports: list[str],
        seeds: list[int],
        steps: int | None = None,
        guidance: float | None = None,
        sentences: list[str | None] | None = None,
        batch_size: int = 8,
    ) -> list[GeneratedImage]:
        """One image per (report, seed); ``sentences`` overrides the labeler's disease sentence per row."""
        steps = self.sampling.steps if steps is None else steps
        guidance = self.sampling.guidance if guidance is None else guidance
        check_request(steps, guidance)
        if len(reports) != len(seeds):
            raise DataError(f"seed: {len(seeds)} seeds for {len(reports)} reports")
        for i, seed in enumerate(seeds):
            if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or not 0 <= int(seed) < 2**63:
                raise DataError(f"seed: row {i}: must be an integer in [0, 2**63), got {seed!r}")
        texts = self.text.run(reports, sentences)
        runtime = runtime_record(self.precision)
        out: list[GeneratedImage] = []
        for start in range(0, len(texts), batch_size):
            part = texts[start : start + batch_size]
            seeds_part = [int(s) for s in seeds[start : start + batch_size]]
            latents = self.denoiser.sample(
                np.stack([t.context for t in part]),
                np.stack([t.hint for t in part]) if self.has_adapter else None,
                self.text.uncond.numpy(),
                seeds_part,
                steps,
                float(guidance),
            )
            pixels = to_uint8(self.decoder.decode(latents))
            out += [
                GeneratedImage(p, s, t.disease_sentence, steps, float(guidance), runtime)
                for p, s, t in zip(pixels, seeds_part, part, strict=True)
            ]
        return out


class GeneratorPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow face of :class:`Generator`: a table of reports and seeds in, PNGs out."""

    #: MLflow's type-hint validation would coerce the DataFrame (and warns when predict has no hints);
    #: predict checks its own columns, naming the one that is wrong.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        self.generator = Generator(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - typed hints make MLflow validate
        """``model_input``: DataFrame with ``report`` and ``seed`` (optional ``steps``, ``guidance``,
        ``disease_sentence``). Returns a DataFrame: seed, disease_sentence, steps, guidance, precision, png (bytes)."""
        import pandas as pd

        frame = pd.DataFrame(model_input)
        for column in ("report", "seed"):
            if column not in frame.columns:
                raise DataError(f"{column}: missing column (need 'report' and 'seed')")
        rows = []
        for (steps, guidance), part in _groups(frame, self.generator.sampling):
            images = self.generator.generate(
                [r if isinstance(r, str) else "" for r in part["report"]],
                [int(s) for s in part["seed"]],
                steps=steps,
                guidance=guidance,
                sentences=list(part["disease_sentence"]) if "disease_sentence" in part.columns else None,
            )
            provenance = self.generator.provenance()
            rows += [
                {
                    "row": int(i),
                    "seed": img.seed,
                    "disease_sentence": img.disease_sentence,
                    "steps": img.steps,
                    "guidance": img.guidance,
                    "precision": img.runtime["precision"],
                    "png": img.png(provenance),
                }
                for i, img in zip(part.index, images, strict=True)
            ]
        return pd.DataFrame(sorted(rows, key=lambda r: r["row"])).drop(columns="row")


def _groups(frame: Any, sampling: SamplingConfig) -> list[tuple[tuple[Any, Any], Any]]:
    """Rows grouped by their (steps, guidance), defaults filled in: one sampler run per group."""
    order: dict[tuple[Any, Any], list[int]] = {}
    for i in range(len(frame)):
        key = (_cell(frame, "steps", i, sampling.steps), _cell(frame, "guidance", i, sampling.guidance))
        order.setdefault(key, []).append(i)
    return [(key, frame.iloc[rows]) for key, rows in order.items()]


def _cell(frame: Any, column: str, i: int, default: Any) -> Any:
    if column not in frame.columns:
        return default
    value = frame[column].iloc[i]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    if column == "steps" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
