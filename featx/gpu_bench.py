"""Deprecated path: featx bench --device cuda is ``featx.bench.gpu``; this module forwards its names there, with a DeprecationWarning."""
from featx._moved import forwarding

__getattr__, __dir__ = forwarding(__name__, "featx.bench.gpu")
