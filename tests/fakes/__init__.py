"""Fakes for hardware and services, shared by tests (named as fakes on purpose)."""
