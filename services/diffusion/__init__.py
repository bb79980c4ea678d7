"""Diffusion service: U-ViT denoiser, disease-knowledge adapter, sampling, two-stage training, the generator
bundle and its parts, and output files. The Ray Serve graph lives in ``services/serve/``."""
