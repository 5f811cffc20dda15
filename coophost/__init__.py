"""coophost: provision member-owned services for a hosting co-operative."""

__version__ = "0.1.0"
