"""Backends, schema and queries of the drops store; `monitors.drops_store` is the entry point."""
