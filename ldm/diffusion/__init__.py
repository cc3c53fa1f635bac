"""Noise schedules, prediction-type algebra and samplers."""
