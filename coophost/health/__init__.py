"""The co-op's health: what `coophost status`, `coophost notify` and the member shell report.

`probe` gathers facts on the hosts (one fixed script over SSH each, concurrently); `checks`
turns facts and state.db's records into checks (pure); `notify` keeps each check's last state
and mails the co-op's contacts when one changes.
"""
