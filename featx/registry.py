"""The ``featx`` scope's registries, where mmengine looks for them: it imports ``<scope>.registry`` on seeing a
``"featx."`` type in a config (``dict(type="featx.ResNet50FPN")``, ``dict(type="featx.ImageFolder")``).

``MODELS`` is the model core's (``featx.models.registry``: backbones, necks, composites, the classifier);
``DATASETS``, ``METRICS`` and ``HOOKS`` are fine-tuning's (``featx.train``: the ImageFolder dataset, top-k
accuracy, the seed and schedule hooks), each an mmengine child of the root registry of its kind whose
``locations`` are the training modules that register in it. The registries are ``FeatxRegistry`` (lookups
forgive spelling). This module sits with the applications: the model core registers into
``featx.models.registry`` and never imports it.
"""
from __future__ import annotations

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS

from featx.models.registry import MODELS, FeatxRegistry, normalize_name, scoped_type

__all__ = ["FeatxRegistry", "MODELS", "DATASETS", "METRICS", "HOOKS", "normalize_name", "scoped_type"]

DATASETS = FeatxRegistry("dataset", parent=MMENGINE_DATASETS, scope="featx", locations=["featx.train.data"])
METRICS = FeatxRegistry("metric", parent=MMENGINE_METRICS, scope="featx", locations=["featx.train.metrics"])
HOOKS = FeatxRegistry("hook", parent=MMENGINE_HOOKS, scope="featx", locations=["featx.train.hooks"])
