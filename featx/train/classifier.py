"""Deprecated path: the image classifier is ``featx.models.classifier`` (a model, built by name for export and
extraction as well as for training); this module forwards its names there, with a DeprecationWarning."""
from featx._moved import forwarding

__getattr__, __dir__ = forwarding(__name__, "featx.models.classifier")
