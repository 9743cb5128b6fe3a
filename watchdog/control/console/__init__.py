"""The operator console at GET / of the control port: model, timeline, incidents, pages (static/ is package data)."""
