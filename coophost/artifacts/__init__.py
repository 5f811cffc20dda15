"""Upstream artifacts the co-op mirrors for its hosts: catalogue, verified store."""
