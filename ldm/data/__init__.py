"""Image-caption datasets, transforms and the latent cache."""
