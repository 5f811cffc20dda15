"""Backups: borg repositories on the co-op's backup hosts, runs, restores and drills."""
