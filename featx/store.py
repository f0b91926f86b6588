"""Deprecated path: the feature store's reader and shard format is ``featx.extraction.store``; this module forwards its
names there, with a DeprecationWarning."""
from featx._moved import forwarding

__getattr__, __dir__ = forwarding(__name__, "featx.extraction.store")
