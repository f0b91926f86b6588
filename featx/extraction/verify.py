"""``featx extract --verify``: recompute a sample of a store's images and compare with what it holds."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from featx.compare import compare_arrays
from featx.errors import StoreError
from featx.extraction.decoding import PlannedImages
from featx.extraction.planning import PlannedImage, target_size
from featx.extraction.pooling import level_features
from featx.extraction.running import build_runner
from featx.extraction.settings import ExtractSettings
from featx.extraction.store import FeatureStore
from featx.io import scratch_dir
from featx.models import build_described_model, build_from_config, check_file_config
from featx.models.specs import named_weights


# --verify's gate per compute precision: max relative error of a recomputed (fp32) vector, and its cosine
VERIFY_GATES = {"fp32": (1e-4, 0.9999), "tf32": (1e-2, 0.9999), "fp16": (2e-2, 0.999), "bf16": (6e-2, 0.998)}


RANDOM_WEIGHTS = "random"


def verify_store(folder: Union[str, Path], sample: int = 8, log: Callable[[str], None] = print,
                 weights: Optional[str] = None) -> dict:
    """Recompute ``sample`` images of a store (evenly spread) from its manifest and compare with what is
    stored: worst relative error and cosine per level. fp16 stores are expected within ~1e-3.

    A store is untrusted input: the model is rebuilt by :func:`featx.models.build_described_model` (nothing
    the manifest names is fetched; weights only if already on this machine). ``weights`` overrides the
    manifest's (any featx ``weights=``; the user's choice, so the usual rules apply). A store made with random
    weights is refused unless ``weights="random"`` says that is what is being verified."""
    store = FeatureStore(folder)  # refuses a store whose index, arrays and manifest disagree
    if not len(store):
        raise StoreError(f"{folder} holds no images, so nothing can be verified (FAIL)")
    m = store.manifest
    cfg = m["model_config"]
    check_file_config(cfg, f"{folder}/manifest.json")  # before anything is built, whatever the weights
    if weights == RANDOM_WEIGHTS:
        if named_weights(cfg):
            raise ValueError(f"{folder} was made with weights {cfg.get('weights')}, not random ones; drop --weights random")
        model = build_from_config(cfg)
    elif weights is not None:
        model = build_from_config({**cfg, "weights": weights})
    elif not named_weights(cfg):
        raise ValueError(f"{folder} holds features of a randomly initialized network (no weights were loaded), "
                         "useless for retrieval; pass --weights random to verify it anyway")
    else:
        model = build_described_model(cfg, f"{folder}/manifest.json",
                                      "pass --weights (the weights the store was made with) to verify with weights you have")
    pre = m["preprocessing"]
    settings = ExtractSettings(size=pre["shorter_side"] or 224, resize=tuple(pre["resize"]) if pre["resize"] else None,
                               levels=m["levels"], pool=m["pool"] or "avg", gem_p=m.get("gem_p") or 3.0,
                               maps=m["store"] == "maps", dtype="fp32", batch_size=1, workers=0)
    picks = [store.entry_at(int(i)) for i in np.linspace(0, len(store) - 1, min(sample, len(store)))] if len(store) else []
    root = Path(m["source_root"])
    with scratch_dir() as tmp:
        run, net = build_runner(cfg, settings, Path(tmp), model)
        names = [f.name for f in net.feature_info]
        worst = {lv: {"rel": 0.0, "cosine": 1.0} for lv in m["levels"]}
        for e in picks:
            file = root / e.path  # an absolute id stays itself
            item = PlannedImage(e.path, str(file), e.size, *target_size(e.size, settings, pre["pad_to"]))
            _, x, record, error, _, _ = PlannedImages([item], pre["channels"], pre["mean"], pre["std"])[0]
            digest = record.get("sha256", "")
            if error or digest != e.sha256:
                raise ValueError(f"{e.path}: the image changed since extraction (sha256 {digest[:12]} vs stored "
                                 f"{e.sha256[:12]})" if not error else f"{e.path}: {error}")
            outs = run(x[None])
            stored = store[e.path]
            for lv in m["levels"]:
                fresh = level_features(outs[names.index(lv)], [item.resized], m["strides"][lv], settings, np.float32)[0]
                d = compare_arrays(np.asarray(stored[lv], np.float32), fresh)
                worst[lv]["rel"] = max(worst[lv]["rel"], d.rel)
                worst[lv]["cosine"] = min(worst[lv]["cosine"], d.cosine)
    precision = m.get("precision", "fp32")
    gate_rel, gate_cos = VERIFY_GATES[precision]
    tol = max(gate_rel, 2e-3 if m["dtype"] == "fp16" else 0.0)  # the stored dtype's rounding, or the compute's
    report = {"images": len(picks), "levels": worst, "tolerance": tol, "min_cosine": gate_cos, "precision": precision,
              "passed": all(v["rel"] <= tol and v["cosine"] >= gate_cos for v in worst.values())}
    log(f"verify {folder}: {len(picks)} images recomputed; " + ", ".join(
        f"{lv} rel {v['rel']:.2e} cos {v['cosine']:.6f}" for lv, v in worst.items())
        + f" -> {'PASS' if report['passed'] else 'FAIL'} ({precision} compute: tolerance {tol:g}, cosine >= {gate_cos})")
    return report
