"""Stage 04: clustering in the raw and latent spaces, evaluation, the primary segmentation."""
