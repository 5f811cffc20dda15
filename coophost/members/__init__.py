"""Members: requests, lifecycle, takeout, authorized keys, the audit log, the member shell."""
