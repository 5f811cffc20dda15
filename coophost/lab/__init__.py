"""The lab: a co-op of systemd Debian hosts on local Docker, with DNS, ACME and a control host."""
