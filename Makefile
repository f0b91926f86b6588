# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv (only when missing or out of date), then run the demo
#   make test   - the same set-up, then the whole test suite
#   make finetune-demo - digits ImageFolder -> ResNet-18 fine-tuning -> predict -> ONNX (~5 min)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featx-installed
EXTRAS ?= dev

.PHONY: demo finetune-demo test setup clean
setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m featx.cli demo

finetune-demo: $(STAMP)
	$(PY) -m featx.cli finetune-demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
