"""Evaluation: FID / KID (Inception-v3) and CLIP score in MindSpore."""
