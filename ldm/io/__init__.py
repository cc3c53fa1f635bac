"""Small file helpers for generation runs: prompt streaming, atomic image writes, grids, manifests."""
