"""Diffusion service: U-ViT denoiser, disease-knowledge adapter, sampling, two-stage training, the generator
bundle and its parts, output files, and the Ray Serve generation graph (``serving/``)."""
