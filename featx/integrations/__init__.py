"""Adapters that put featx models into other libraries' detectors."""
