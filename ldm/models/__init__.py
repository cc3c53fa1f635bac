"""Networks: UNet, VAE, text encoders + tokenizer, and the LatentDiffusion wrapper."""
