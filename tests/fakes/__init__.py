"""Fakes of external services for tests (only services: never our own code)."""
