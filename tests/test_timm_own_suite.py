"""timm's own ``tests/test_models.py`` (the pinned timm's, from its source distribution, cached by
``tools/fetch_timm_tests.py``) on every ``featx_*`` model, through featx's pytest plugin
``tests/plugins/timm_featx.py``: timm's forward, backward, default-cfg, features, FX and TorchScript groups,
and two of its unmarked tests.

It runs in child pytests so timm's module-level settings (TorchScript executor flags) stay out of this
session: two at once, each given half of timm's test functions and one torch thread (the tests are small
tensors and Python-bound tracing, scripting and model building, so one thread each is no slower and the two
share the machine's cores). Every test that runs must pass; the number per test is fixed here, so a model
that silently drops out of timm's parametrization fails this test too."""
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

# tests run per timm test function of the groups timm's CI runs per model (markers forward, backward, cfg,
# features, fxforward, fxbackward, torchscript): 37 featx models; 51 pretrained tags for the cfg test; timm's
# TorchScript exclusions drop the 4 DenseNets ('densenet*'); its forward_intermediates tests take the models whose
# timm family module is in its list (not sknet, resnest; no family for alexnet, googlenet, lenet5): 29
EXPECTED = {
    "test_model_forward": 37, "test_model_backward": 37, "test_model_default_cfgs": 51,
    "test_model_forward_torchscript": 33, "test_model_forward_features": 37 - 2,
    "test_model_forward_intermediates_features": 29, "test_model_forward_intermediates": 29,
    "test_model_forward_fx": 37, "test_model_backward_fx": 37,
}
# timm's tests that carry no marker (its CI leaves them out: slow, or too much memory for its runners)
UNMARKED = {"test_prune_intermediate_layers_contract": 29, "test_model_forward_fx_torchscript": 37 - 4}
# two child runs of about equal length (per function, from their JUnit reports: each about 5.5 min on a 2-CPU
# machine, collecting timm's file included)
SHARDS = (
    ("test_model_default_cfgs", "test_model_backward_fx", "test_model_forward_fx", "test_model_forward_torchscript",
     "test_model_forward", "test_model_forward_features", "test_model_forward_intermediates_features"),
    ("test_model_backward", "test_model_forward_intermediates", *UNMARKED),
)


def start_timm_suite(out: Path, tests: tuple[str, ...]) -> tuple[subprocess.Popen, Path]:
    """Start timm's test functions named in ``tests`` (all their parametrizations) on featx's models in a child
    pytest with one torch thread; returns the process and where its JUnit XML report will be."""
    test_file = str(fetch())
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "plugins"), os.environ.get("PYTHONPATH", "")])}
    env.pop("GITHUB_ACTIONS", None)  # timm's exclusion lists as on a developer's machine, not its CI's memory cuts
    report = out / "timm-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-p", "timm_featx", *(f"{test_file}::{t}" for t in tests), "-q",
           "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(out), "-W", "ignore", f"--junitxml={report}"]
    with open(out / "pytest.log", "w") as log:
        return subprocess.Popen(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT), report


def run_timm_suite(out: Path, shards: tuple[tuple[str, ...], ...] = SHARDS, timeout: float = 3000) -> list[ET.Element]:
    """The shards' child pytests at once; returns their JUnit XML reports' roots."""
    started = [start_timm_suite(out / f"shard{i}", tests) for i, tests in enumerate(shards)]
    roots = []
    for proc, report in started:
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
        log = (report.parent / "pytest.log").read_text()
        assert report.is_file(), log[-6000:]
        roots.append(ET.parse(report).getroot())
    return roots


def _outcome(roots: list[ET.Element], functions: dict[str, int]) -> tuple[list, list, Counter]:
    """Failures, skips and counts per test function, of the test cases of ``functions``."""
    cases = [c for root in roots for c in root.iter("testcase") if c.get("name").split("[", 1)[0] in functions]
    failed = [f"{c.get('name')}: {(c.find('failure') if c.find('failure') is not None else c.find('error')).get('message', '')[:300]}"
              for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    models = [c.get("name").split("[", 1)[-1].rstrip("]").split("-")[-1] for c in cases]  # test[1-featx_x] or test[featx_x]
    assert cases and all(m.startswith("featx_") for m in models), models
    return failed, skipped, Counter(c.get("name").split("[", 1)[0] for c in cases)


@pytest.fixture(scope="module")
def timm_reports(tmp_path_factory) -> list[ET.Element]:
    return run_timm_suite(tmp_path_factory.mktemp("timm"))


def test_the_shards_run_each_timm_function_once():
    names = [t for shard in SHARDS for t in shard]
    assert sorted(names) == sorted([*EXPECTED, *UNMARKED])


@pytest.mark.slow
def test_timms_own_model_tests_pass_on_every_featx_model(timm_reports):
    failed, skipped, per_test = _outcome(timm_reports, EXPECTED)
    assert not failed, "\n".join(failed)
    assert not skipped, skipped
    assert dict(per_test) == EXPECTED


@pytest.mark.slow
def test_timms_unmarked_tests_pass_on_featx_models(timm_reports):
    """test_prune_intermediate_layers_contract: pruned and stop_early taps equal the full model's at every level, the
    stem's included, and the pruned model trains. test_model_forward_fx_torchscript: the model as timm's FX graph
    (torchvision's create_feature_extractor) passes torch.jit.script and runs (timm's TorchScript exclusions drop the
    DenseNets)."""
    failed, skipped, per_test = _outcome(timm_reports, UNMARKED)
    assert not failed, "\n".join(failed)
    assert not skipped and dict(per_test) == UNMARKED


def test_exemptions_name_a_timm_check_and_a_featx_model():
    """Each exemption is one test of timm's file and one featx model, with its reason."""
    import timm

    import featx  # noqa: F401

    for (test, model), why in EXEMPT.items():
        assert test.startswith("test_model_") and model in timm.list_models("featx_*") and len(why) > 40
