"""Torch-free checkpoint readers/writers and parameter-name maps."""
