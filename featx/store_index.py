"""Deprecated path: a store in LAION's npy + parquet layout is ``featx.extraction.store_index``; this module forwards
its names there, with a DeprecationWarning."""
from featx._moved import forwarding

__getattr__, __dir__ = forwarding(__name__, "featx.extraction.store_index")
