"""Probing and evaluation: preference probe, image metrics, judges, action-text metrics, tables, plots."""
