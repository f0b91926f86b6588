"""Models by name: the catalogue, composites, detector presets and the one name resolver.

Layer: above ``backbones``/``necks``/``weights``; everything that builds a model by name uses this
package (``create_model``), so Python, mmengine configs, timm and the CLI agree on names.
"""
from featx.models.catalog import (BASES, CATALOG, FAMILIES, PYRAMIDS, Family, ModelEntry, Pyramid, build_model, get_entry,
                                  list_models)
from featx.models.composite import BackboneFPN
from featx.models.presets import DETECTION_PRESETS, detection_composite
from featx.models.resolve import build_module, create_model, resolve_name
from featx.models.sources import load_weights, resolve_weights, torchvision_weights_enum
from featx.models.specs import (build_described_model, build_from_config, classifier_config_from_checkpoint, model_config,
                                target_config)
from featx.models.trusted import MAX_CHANNELS, check_file_config

__all__ = [
    "BASES", "CATALOG", "FAMILIES", "PYRAMIDS", "Family", "ModelEntry", "Pyramid", "BackboneFPN", "build_model",
    "get_entry", "list_models", "DETECTION_PRESETS", "detection_composite", "build_module", "create_model",
    "resolve_name", "load_weights", "resolve_weights", "torchvision_weights_enum", "build_from_config",
    "build_described_model", "classifier_config_from_checkpoint", "model_config", "target_config",
    "check_file_config", "MAX_CHANNELS",
]
