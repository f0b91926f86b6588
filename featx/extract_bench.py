"""Deprecated path: featx bench-extract is ``featx.bench.extract``; this module forwards its names there, with a DeprecationWarning."""
from featx._moved import forwarding

__getattr__, __dir__ = forwarding(__name__, "featx.bench.extract")
