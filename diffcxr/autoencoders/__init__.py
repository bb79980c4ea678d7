"""Frozen pretrained autoencoders that define Diff-CXR's latent space."""
