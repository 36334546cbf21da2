"""Stage 03: the deterministic autoencoder and the latent space."""
