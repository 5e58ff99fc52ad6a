"""Pipelines: match, parse, redact, filter, sample and route lines (DESIGN §12)."""
