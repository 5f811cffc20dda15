"""The click command line: parse options, call the core, print. No logic lives here."""
