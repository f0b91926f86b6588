"""Deprecated path: featx extract as a Ray Data pipeline is ``featx.extraction.ray``; this module forwards its names
there, with a DeprecationWarning."""
from featx._moved import forwarding

__getattr__, __dir__ = forwarding(__name__, "featx.extraction.ray")
