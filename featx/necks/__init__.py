"""Necks that turn backbone levels into a feature pyramid."""
from featx.necks.fpn import FPN

__all__ = ["FPN"]
