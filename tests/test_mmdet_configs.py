"""Every ResNet/ResNeXt backbone of mmdet's shipped configs, with the type swapped and nothing else: featx builds it
as mmdet does (the same maps with mmdet's weights copied); none is refused or built differently. The configs are collected now, from the installed mmdet's own ``.mim/configs``."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import mmdet
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope

import featx
from helpers import failures_in_processes, randomize_norm_stats, rel_err

register_all_modules(init_default_scope=False)
CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs"


def _backbone_sets() -> dict[str, list[str]]:
    """Each distinct ResNet/ResNeXt backbone argument set of mmdet's configs -> the configs that use it."""
    sets: dict[str, list[str]] = {}
    for path in sorted(CONFIGS.rglob("*.py")):
        if "_base_" in path.parts:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cfg = Config.fromfile(str(path))
        except Exception:  # a config mmdet itself cannot read here (it needs a package not installed)
            continue
        stack = [cfg.get("model")]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("type") in ("ResNet", "ResNeXt") and "depth" in node:
                    plain = node.to_dict() if hasattr(node, "to_dict") else dict(node)
                    sets.setdefault(json.dumps(plain, sort_keys=True, default=str), []).append(str(path))
                stack.extend(node.values())
            elif isinstance(node, (list, tuple)):
                stack.extend(node)
    return sets


def check_featx_builds_it_as_mmdet_does(key: str) -> None:
    """One backbone argument set (JSON): mmdet's module and featx's, built by mmdet's registry, give the same maps
    with mmdet's weights loaded into featx's (strict, through featx's key maps); featx refusing it fails."""
    import tempfile

    cfg = json.loads(key)
    with DefaultScope.overwrite_default_scope("mmdet"):
        theirs = MMDET_MODELS.build(cfg)
        try:
            ours = MMDET_MODELS.build({**cfg, "type": f"featx.{cfg['type']}"})
        except ValueError as e:
            raise AssertionError(f"featx refused it: {e}") from e
    randomize_norm_stats(theirs, seed=2)
    with torch.no_grad():
        for p in theirs.parameters():  # DCN offsets and GroupNorm affines start at constants
            p.add_(torch.randn_like(p) * 0.01)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(theirs.state_dict(), Path(tmp) / "w.pth")
        featx.models.load_weights(ours, str(Path(tmp) / "w.pth"))
    theirs.eval(), ours.eval()
    x = torch.randn(1, 3, 96, 128)  # C5 3x4 (6x8 with a dilated C5): every map compared, at a fraction of the cost
    with torch.no_grad():
        ref, out = theirs(x), ours(x)
    assert len(ref) == len(out), (len(ref), len(out))
    for r, o in zip(ref, out):
        assert r.shape == o.shape and rel_err(o, r) <= 1e-5, (r.shape, o.shape)


@pytest.mark.slow
def test_every_mmdet_config_backbone_swaps_in_featx_as_mmdet_builds_it():
    """The argument sets are compared two at a time in worker processes (building is mostly Python)."""
    sets = _backbone_sets()
    failures = failures_in_processes(check_featx_builds_it_as_mmdet_does, list(sets))
    total = sum(len(configs) for configs in sets.values())
    assert total >= 500, total  # mmdet 3.3.0 ships 549 such backbones (85 distinct argument sets)
    differ = [f"{sets[key][0]} (and {len(sets[key]) - 1} more configs): {why}" for key, why in failures.items() if why]
    assert not differ, "\n".join(differ)
