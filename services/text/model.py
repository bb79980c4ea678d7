"""The report encoder Diff-CXR conditions on: CLIP text tower + information squeeze.

``ReportEncoder.encode(ids)`` returns the global token (aligned with images by
the contrastive loss) and the context tokens (B, K, d) the denoiser attends to.
A trained encoder is saved as a *bundle folder* — ``text_model.safetensors`` (towers + squeeze),
``text_model.json`` (the exact open_clip kwargs and sizes, see :mod:`diffcxr.modelio`) and ``hf/``
(tower config + tokenizer) — so it loads anywhere, offline, without the folders it was built from.
Bundles of format ``diffcxr-text-v1`` (``weights.pt``, the spec flat in the JSON) still load.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffcxr import modelio
from diffcxr.config import TextConfig
from diffcxr.errors import ConfigError
from services.text.encoder import IMAGE_MEAN, IMAGE_STD, TOKENIZER_FILES, build_clip, clip_config, vision_size
from services.text.squeeze import InformationSqueeze
from services.text.tokenizer import ReportTokenizer

BUNDLE_FORMAT = "diffcxr-text-v2"  # v2: safetensors + modelio JSON; an older diffcxr refuses it by name
LEGACY_FORMAT = "diffcxr-text-v1"  # weights.pt and the spec flat in text_model.json: still loads
SPEC_NAME, LEGACY_WEIGHTS = "text_model", "weights.pt"
#: spec keys also kept at the top of text_model.json: the stages and the registry read them without a model.
SUMMARY_KEYS = ("format", "encoder", "context_length", "hidden_dim", "squeeze_tokens", "embed_dim", "image_size")
TRAIN_PARTS = ("squeezer", "squeezer+heads", "squeezer+text", "all")
#: ``pad_states`` of a bundle whose tower runs each report at its own length (zeros at padding positions).
PAD_STATES_ZERO = "zero"


def _cat_rows(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (a, b) results → the batch's (a, b)."""
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


class ReportEncoder(nn.Module):
    """open_clip ``CustomTextCLIP`` + :class:`InformationSqueeze` (none when ``squeeze_tokens`` is 0)."""

    def __init__(self, clip: nn.Module, spec: dict[str, Any], hf_dir: Path) -> None:
        super().__init__()
        self.clip, self.spec, self.hf_dir = clip, spec, hf_dir
        length, dim, k = spec["context_length"], spec["hidden_dim"], spec["squeeze_tokens"]
        self.squeeze = InformationSqueeze(1 + length, k, dim) if k else None
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: TextConfig, image_size: int) -> ReportEncoder:
        """A fresh encoder: pretrained text tower (minilm) or BiomedCLIP's architecture (+ weights if given)."""
        kwargs, hf_dir = clip_config(cfg, image_size)
        clip = build_clip(kwargs, hf_dir)
        hidden = clip.text.config.hidden_size
        if hidden != cfg.hidden_dim:
            raise ConfigError(f"text.hidden_dim is {cfg.hidden_dim} but the text tower has {hidden}-d states")
        spec = {
            "format": BUNDLE_FORMAT,
            "encoder": cfg.encoder,
            "clip": kwargs,
            "context_length": cfg.context_length,
            "hidden_dim": hidden,
            "squeeze_tokens": cfg.squeeze_tokens,
            "embed_dim": kwargs["embed_dim"],
            "image_size": image_size,
            "vision_size": vision_size(kwargs),
            "logit_scale": cfg.logit_scale,
            "pad_states": PAD_STATES_ZERO,
        }
        model = cls(clip, spec, hf_dir)
        if cfg.encoder_weights:
            from services.text.weights import load_open_clip_weights

            load_open_clip_weights(model.clip, cfg.encoder_weights, cfg.encoder_weights_sha256)
        return model

    def tokenizer(self) -> ReportTokenizer:
        return ReportTokenizer(self.hf_dir, self.spec["context_length"])

    @property
    def pad_id(self) -> int:
        return int(self.clip.text.config.pad_token_id or 0)

    @property
    def context_shape(self) -> tuple[int, int]:
        """(tokens, width) of the conditioning context."""
        k = self.spec["squeeze_tokens"] or self.spec["context_length"]
        return (k, self.spec["hidden_dim"])

    # ------------------------------------------------------------------ forward
    def token_states(self, ids: torch.Tensor, batch_invariant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The tower's pooled vector (B, d) and all token states (B, L, d).

        A bundle with ``pad_states: "zero"`` (every bundle built since 2026-12-04) runs each report at its own
        token count, the rows of one count together, and holds zeros at the padding positions: a report
        averages ~67 of 128 tokens, so the tower does about half the work. The matrix kernels' rounding
        depends on how many rows they get (~1e-6), so ``batch_invariant`` runs every row alone: what the
        generator uses, so an image never depends on which requests shared its batch. Older bundles were
        trained on the tower's states at the padding positions too, so they keep the full-length pass (with
        ``batch_invariant``, one report at a time)."""
        if batch_invariant and ids.shape[0] > 1:  # one report at a time, whichever pass the bundle uses
            return _cat_rows([self.token_states(ids[i : i + 1]) for i in range(ids.shape[0])])
        mask = ids != self.pad_id
        # open_clip's MaxPooler reads the padding positions (its mask is inverted), so trimming would change it
        trims = type(self.clip.text.pooler).__name__ != "MaxPooler"
        if self.spec.get("pad_states") != PAD_STATES_ZERO or not trims or ids.shape[0] == 0:
            out = self.clip.text.transformer(input_ids=ids, attention_mask=mask.long())
            return self.clip.text.pooler(out, mask.long()), out.last_hidden_state
        lengths = mask.sum(1).clamp(min=1)  # an all-padding row still needs one position
        groups = [(int(n), torch.nonzero(lengths == n).squeeze(1)) for n in torch.unique(lengths).tolist()]
        pooled: torch.Tensor | None = None
        states: torch.Tensor | None = None
        for n, rows in groups:
            sub_mask = mask[rows, :n].long()
            out = self.clip.text.transformer(input_ids=ids[rows, :n], attention_mask=sub_mask)
            hidden, sub_pooled = out.last_hidden_state, self.clip.text.pooler(out, sub_mask)
            if states is None or pooled is None:
                states = hidden.new_zeros((*ids.shape, hidden.shape[-1]))
                pooled = sub_pooled.new_zeros((ids.shape[0], sub_pooled.shape[-1]))
            states[rows, :n] = hidden * sub_mask[..., None]
            pooled[rows] = sub_pooled
        assert states is not None and pooled is not None  # ids has rows, so there was a group
        return pooled, states

    def encode(self, ids: torch.Tensor, batch_invariant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(global token (B, d), context (B, K, d)); without a squeeze: (pooled, all L states).
        ``batch_invariant``: see :meth:`token_states`; the squeeze's convolutions then also run one row at a
        time (oneDNN picks its algorithm by batch size)."""
        if batch_invariant and ids.shape[0] > 1:
            return _cat_rows([self.encode(ids[i : i + 1]) for i in range(ids.shape[0])])
        return self.squeeze_states(*self.token_states(ids))

    def squeeze_states(self, pooled: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` from the tower's output: a frozen tower's states are computed once and reused."""
        if self.squeeze is None:
            return pooled, states
        squeezed = self.squeeze(torch.cat([pooled[:, None], states], dim=1))
        return squeezed[:, 0], squeezed[:, 1:]

    def text_features(self, global_token: torch.Tensor) -> torch.Tensor:
        """Unit-norm joint-space features of the global token (the tower's projection head)."""
        return F.normalize(self.clip.text.proj(global_token), dim=-1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) grayscale → normalised (B, 3, V, V) at the image tower's size."""
        x = images.float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        size = self.spec["vision_size"]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.image_mean) / self.image_std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm joint-space features of uint8 grayscale images (B, S, S)."""
        return F.normalize(self.clip.visual(self.preprocess(images)), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features, text features) for the contrastive loss.

        Give ``ids`` when the text tower trains, or precomputed ``pooled`` and
        ``states`` when it is frozen (they are computed once, not every epoch).
        """
        global_token = (self.encode(ids) if ids is not None else self.squeeze_states(pooled, states))[0]
        return self.image_features(images), self.text_features(global_token)

    @torch.no_grad()
    def unconditional(self) -> torch.Tensor:
        """The context of the empty report (K, d): the unconditional input of classifier-free guidance."""
        ids = self.tokenizer()([""]).ids
        return self.encode(ids)[1][0]

    # ------------------------------------------------------------------ training parts
    def set_trainable(self, parts: str) -> list[nn.Parameter]:
        """Freeze everything, then unfreeze ``parts`` (see ``text.train_parts``); returns the trainable ones."""
        if parts not in TRAIN_PARTS:
            raise ConfigError(f"text.train_parts must be one of {', '.join(TRAIN_PARTS)}, got '{parts}'")
        self.requires_grad_(False)
        chosen: list[nn.Module] = [self.squeeze] if self.squeeze is not None else []
        if parts == "squeezer+heads":
            chosen += [self.clip.text.proj, self.clip.visual]
        elif parts == "squeezer+text":
            chosen += [self.clip.text]
        elif parts == "all":
            chosen += [self.clip]
        for module in chosen:
            module.requires_grad_(True)
        if getattr(self.clip, "logit_scale", None) is not None:
            self.clip.logit_scale.requires_grad_(False)  # the scale is fixed (text.logit_scale), never learned
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("text.train_parts 'squeezer' with text.squeeze_tokens 0 leaves nothing to train")
        return params

    # ------------------------------------------------------------------ bundles
    def save_bundle(self, folder: str | Path) -> Path:
        """Write ``text_model.safetensors``, ``text_model.json`` and ``hf/`` into ``folder``."""
        folder = Path(folder)
        hf = folder / "hf"
        hf.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", *TOKENIZER_FILES):
            if (self.hf_dir / name).is_file() and self.hf_dir.resolve() != hf.resolve():
                shutil.copyfile(self.hf_dir / name, hf / name)
        spec = {**self.spec, "format": BUNDLE_FORMAT}  # a reloaded v1 bundle is written as v2
        summary = {k: spec[k] for k in SUMMARY_KEYS}
        return modelio.save(self, folder, SPEC_NAME, spec, summary, legacy=LEGACY_WEIGHTS)

    @classmethod
    def load_bundle(cls, folder: str | Path) -> ReportEncoder:
        """The encoder of a bundle folder (v2, or v1 with ``weights.pt``) in eval mode, weights verified."""
        folder = Path(folder)
        if not (folder / f"{SPEC_NAME}.json").is_file():
            raise ConfigError(f"'{folder}' is not a text-model bundle (no {SPEC_NAME}.json)")
        spec = modelio.read_spec(folder, SPEC_NAME)
        if spec.get("format") not in (BUNDLE_FORMAT, LEGACY_FORMAT):
            raise ConfigError(f"'{folder}' has bundle format {spec.get('format')!r}, expected {BUNDLE_FORMAT}")
        legacy = spec["format"] == LEGACY_FORMAT  # v1 kept the spec flat beside its sha256
        config = {k: v for k, v in spec.items() if k != "weights_sha256"} if legacy else spec["config"]
        state, _ = modelio.load_state(folder, SPEC_NAME, legacy=LEGACY_WEIGHTS)
        clip = build_clip(config["clip"], folder / "hf", pretrained_text=False)
        return modelio.fill(cls(clip, config, folder / "hf"), state, f"'{folder}' (text model)")
