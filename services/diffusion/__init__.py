"""Diffusion service: U-ViT denoiser, disease-knowledge adapter, sampling, Serve graph.

Not built yet: tracked in issue #7. The CLI group `diffcxr diffusion` and the pipeline
stage of the same name say so instead of pretending to run.
"""
