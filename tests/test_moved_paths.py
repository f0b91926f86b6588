"""Import paths that moved keep working for a while: the old module serves each public name from its new home with
a DeprecationWarning that names it; the top-level names (featx.extract, featx.FeatureStore) are unchanged."""
from __future__ import annotations

import importlib

import pytest

import featx

MOVED = [("featx.store", "FeatureStore", "featx.extraction.store"),
         ("featx.store", "SHARD_DIR", "featx.extraction.store"),
         ("featx.store_index", "export_index_layout", "featx.extraction.store_index"),
         ("featx.ray_extract", "extract_with_ray", "featx.extraction.ray"),
         ("featx.extraction", "pool_maps", "featx.extraction.pooling"),
         ("featx.extraction", "plan_batches", "featx.extraction.planning"),
         ("featx.extraction", "prepare_store", "featx.extraction.prepare"),
         ("featx.gpu_bench", "run_gpu_benchmark", "featx.bench.gpu"),
         ("featx.extract_bench", "run_extract_benchmark", "featx.bench.extract"),
         ("featx.bench_results", "save_results", "featx.bench.results"),
         ("featx.train.classifier", "ImageClassifier", "featx.models.classifier"),
         ("featx.train.classifier", "load_classifier_weights", "featx.models.classifier")]


@pytest.mark.parametrize("old,name,new", MOVED)
def test_an_old_path_forwards_with_a_warning(old, name, new):
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} is {new}.{name} now"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        getattr(importlib.import_module(old), "not_a_name")


def test_the_main_entry_points_stay_where_they_were(recwarn):
    from featx.bench import run_benchmark
    from featx.bench.cpu import run_benchmark as cpu_run
    from featx.extraction import ExtractSettings, FeatureStore, extract, verify_store  # noqa: F401
    from featx.extraction.pipeline import extract as pipeline_extract
    from featx.extraction.store import FeatureStore as Store

    assert featx.extract is extract is pipeline_extract and callable(featx.extract)
    assert featx.FeatureStore is FeatureStore is Store
    assert run_benchmark is cpu_run
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning) and "featx" in str(w.message)]


@pytest.mark.parametrize("old,new", [("export_onnx", "export_onnx_tuned"), ("export_openvino", "export_openvino_tuned"),
                                     ("optimize_for_inference", "optimize_for_cpu")])
def test_accel_entry_points_have_names_of_their_own(old, new):
    """featx.accel's entry points are not the core's names (featx.deploy's export_onnx, featx.inference's
    optimize_for_inference); the old names forward with a warning."""
    from featx import accel

    with pytest.warns(DeprecationWarning, match=f"featx.accel.{old} is featx.accel.{new} now"):
        assert getattr(accel, old) is getattr(accel, new)
    assert old not in accel.__all__ and new in accel.__all__


def test_the_registries_stay_where_mmengine_and_users_find_them(recwarn):
    """``featx.registry`` (the scope index mmengine imports) still has every registry; the model core's is the same
    object, and a model lookup imports no training module."""
    import subprocess
    import sys

    from featx import registry
    from featx.models import registry as model_registry

    assert registry.MODELS is model_registry.MODELS is featx.MODELS
    assert {r.name for r in (registry.DATASETS, registry.METRICS, registry.HOOKS)} == {"dataset", "metric", "hook"}
    code = ("import sys, featx; featx.create_model('ResNet18'); featx.MODELS.get('featx.ImageClassifier'); "
            "print(sorted(m for m in sys.modules if m.startswith('featx.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
