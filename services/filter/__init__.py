"""Filter service: Latent Noise Filtering (LNFS) — encode images on Ray Data, score them in latent space,
drop the noisy ones (K-means → latent U-shaped autoencoder → discriminator)."""
