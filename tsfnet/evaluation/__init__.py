"""Metrics, tables and plots."""
