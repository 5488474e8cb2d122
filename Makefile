# make install: set up .venv (idempotent; a no-op when pyproject.toml has not changed)
# make demo:    install, then run the offline end-to-end demo
# make test:    install, then run the test suite
# make hub-demo: install, then list, download and rank the demo zoo from a loopback Hugging Face Hub
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH := torch==2.14.1 torchvision==0.29.1
EXTRAS := dev,hf,text-demo,peft,ray,data
STAMP := $(VENV)/.zooforge-installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
# pip warns about every local index folder it skips; keep the real messages.
QUIET_PIP := grep -v -e 'is ignored: it is neither a file nor a directory' || true

.PHONY: install demo hub-demo test bench bench-grid clean
install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing $(TORCH) into $(VENV)"
	@$(PIP) install -q $(TORCH) 2>&1 | $(QUIET_PIP)
	@echo "installing zooforge[$(EXTRAS)]"
	@$(PIP) install -q -e ".[$(EXTRAS)]" $(TORCH) 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import torch, torchvision, timm, zooforge; print('ready: torch', torch.__version__, 'timm', timm.__version__)"
	@rm -f $(VENV)/.zooforge-installed-*
	@touch $@

demo: install
	$(VENV)/bin/zooforge demo

hub-demo: install
	$(PY) -m zooforge.demo.hub

test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/tuning.py
	$(PY) benchmarks/compose.py
	$(PY) benchmarks/rank.py
	$(PY) benchmarks/rank.py --zoo timm --n-per-class 100
	$(PY) benchmarks/audit.py

# every estimator over N x D x C (about an hour on 2 cores)
bench-grid: install
	$(PY) benchmarks/metrics_grid.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
