"""Operator commands that read or copy an installation: check, backup, logs, recoveries."""
