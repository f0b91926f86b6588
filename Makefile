# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv (only when missing or out of date), then run the demo
#   make test   - the same set-up plus a real mmdet (mmcv's CPU ops compiled once into a wheel cache) and
#                 timm's own model tests (from timm's sdist, cached), then the whole test suite
#   make finetune-demo - digits ImageFolder -> ResNet-18 fine-tuning -> predict -> ONNX (times: docs/training.md)
#   make mmdet  - only the mmdet set-up (first time: mmcv's ops compile for 15-30 min on 2 cores; the wheel
#                 is cached in $(WHEEL_CACHE) and reused by every later run and venv)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featx-installed
MMDET_STAMP := $(VENV)/.featx-mmdet-installed
EXTRAS ?= dev
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt
export FEATX_WHEEL_CACHE ?= $(HOME)/.cache/featx/wheels
WHEEL_CACHE := $(FEATX_WHEEL_CACHE)

.PHONY: demo finetune-demo test setup mmdet clean
setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# mmdet 3.3.0 needs mmcv 2.x with compiled ops; PyPI has no wheel for this torch, so
# tools/build_mmcv_wheel.py builds one from mmcv's sdist (once) and pip finds it in the cache.
mmdet: $(MMDET_STAMP)

$(MMDET_STAMP): $(STAMP) tools/build_mmcv_wheel.py
	$(PY) tools/build_mmcv_wheel.py
	$(PIP) --find-links $(WHEEL_CACHE) -e '.[$(EXTRAS),mmdet]'
	@touch $(MMDET_STAMP)

demo: $(STAMP)
	$(PY) -m featx demo

finetune-demo: $(STAMP)
	$(PY) -m featx finetune-demo

# timm's own tests/test_models.py (from the pinned timm's sdist, SHA-256 checked) into a cache, once: the
# suite runs it on featx's timm models (tests/test_timm_own_suite.py)
test: $(MMDET_STAMP)
	$(PY) tools/fetch_timm_tests.py
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
