"""timm's own ``tests/test_models.py`` (the pinned timm's, from its source distribution, cached by
``tools/fetch_timm_tests.py``) on every ``featx_*`` model, through featx's pytest plugin
``tests/plugins/timm_featx.py``: timm's forward, backward, default-cfg, features, FX and TorchScript groups.

It runs in a child pytest so timm's module-level settings (TorchScript executor flags) stay out of this
session. Every test that runs must pass; the number per test is fixed here, so a model that silently drops
out of timm's parametrization fails this test too."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from fetch_timm_tests import fetch  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "plugins"))
from timm_featx import EXEMPT  # noqa: E402

# timm's markers for the groups its CI runs per model
GROUPS = "forward or backward or cfg or features or fxforward or fxbackward or torchscript"
# tests run per timm test function: 37 featx models; 51 pretrained tags for the cfg test; timm's TorchScript
# exclusions drop the 4 DenseNets ('densenet*'); its forward_intermediates tests take the models whose timm family
# module is in its list (not sknet, resnest; no family for alexnet, googlenet, lenet5): 29
EXPECTED = {
    "test_model_forward": 37, "test_model_backward": 37, "test_model_default_cfgs": 51,
    "test_model_forward_torchscript": 33, "test_model_forward_features": 37 - 2,
    "test_model_forward_intermediates_features": 29, "test_model_forward_intermediates": 29,
    "test_model_forward_fx": 37, "test_model_backward_fx": 37,
}


def run_timm_suite(out: Path, tests: tuple[str, ...] = (), markers: str = GROUPS) -> ET.Element:
    """timm's test file (or its functions named in ``tests``) on featx's models in a child pytest; returns the JUnit
    XML report's root."""
    test_file = str(fetch())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "plugins"), os.environ.get("PYTHONPATH", "")])}
    env.pop("GITHUB_ACTIONS", None)  # timm's exclusion lists as on a developer's machine, not its CI's memory cuts
    report = out / "timm-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-p", "timm_featx", test_file, "-q", "-p", "no:cacheprovider",
           "-c", os.devnull, "--rootdir", str(out), "-W", "ignore", f"--junitxml={report}"] + (["-m", markers] if markers else [])
    cmd += ["-k", " or ".join(tests)] if tests else []
    done = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=3000)
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return ET.parse(report).getroot()


def _outcome(root: ET.Element) -> tuple[list, list, Counter]:
    cases = list(root.iter("testcase"))
    failed = [f"{c.get('name')}: {(c.find('failure') if c.find('failure') is not None else c.find('error')).get('message', '')[:300]}"
              for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    models = [c.get("name").split("[", 1)[-1].rstrip("]").split("-")[-1] for c in cases]  # test[1-featx_x] or test[featx_x]
    assert cases and all(m.startswith("featx_") for m in models), models
    return failed, skipped, Counter(c.get("name").split("[", 1)[0] for c in cases)


@pytest.mark.slow
def test_timms_own_model_tests_pass_on_every_featx_model(tmp_path):
    failed, skipped, per_test = _outcome(run_timm_suite(tmp_path))
    assert not failed, "\n".join(failed)
    assert not skipped, skipped
    assert dict(per_test) == EXPECTED


# timm's tests that carry no marker (its CI leaves them out: slow, or too much memory for its runners), run by name
UNMARKED = {"test_prune_intermediate_layers_contract": 29, "test_model_forward_fx_torchscript": 37 - 4}


@pytest.mark.slow
def test_timms_unmarked_tests_pass_on_featx_models(tmp_path):
    """test_prune_intermediate_layers_contract: pruned and stop_early taps equal the full model's at every level, the
    stem's included, and the pruned model trains. test_model_forward_fx_torchscript: the model as timm's FX graph
    (torchvision's create_feature_extractor) passes torch.jit.script and runs (timm's TorchScript exclusions drop the
    DenseNets)."""
    failed, skipped, per_test = _outcome(run_timm_suite(tmp_path, tuple(UNMARKED), markers=""))
    assert not failed, "\n".join(failed)
    assert not skipped and dict(per_test) == UNMARKED


def test_exemptions_name_a_timm_check_and_a_featx_model():
    """Each exemption is one test of timm's file and one featx model, with its reason."""
    import timm

    import featx  # noqa: F401

    for (test, model), why in EXEMPT.items():
        assert test.startswith("test_model_") and model in timm.list_models("featx_*") and len(why) > 40
