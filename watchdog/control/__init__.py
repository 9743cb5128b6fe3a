"""The control side of a running watchdog: its HTTP API, the CLI's client of it, the operator console."""
