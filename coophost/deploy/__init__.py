"""The parallel deploy engine: only what changed, hosts concurrently, failures kept per host."""
