"""`coophost host enrol`: take a freshly installed host into the co-op (plan: pure; run: SSH)."""
