"""Metrics, EMF, tracing and structured logging for both services."""
