"""Desired state: what each host should hold, from the registry (pure, no writes)."""
