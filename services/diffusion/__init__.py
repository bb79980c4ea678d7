"""Diffusion service: U-ViT denoiser, disease-knowledge adapter, sampling, two-stage training, the generator
bundle and its parts, and output files. The Ray Serve graph lives in ``services/serve/``."""

from diffcxr.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "Generator": "generator",
        "count_flops": "flops:count",
        "UViTConfig": "uvit",
        "DenoiserPart": "parts",
        "DecoderPart": "parts",
        "GUIDANCE_RANGE": "schedulers",
        "STEPS_RANGE": "schedulers",
    },
)
