# The two commands: `make run` and `make test`. Everything else is a step they take.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml clients/python/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-tf-min test-containers install lint bench golden clean
# The lowest transformers setup.cfg allows; `make test` also runs the policy tests on it (issue 13).
TF_MIN := $(shell sed -n 's/^ *transformers>=\([0-9.]*\),.*/\1/p' setup.cfg)
TF_MIN_DIR := .data/tf-$(TF_MIN)

# openpi-client (openpi's own client, for the compatibility tests) pins numpy<2, which its websocket client
# does not need: it is installed without dependencies; the ones it uses come with the dev extra.
$(STAMP): setup.cfg pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps 'openpi-client>=0.1.2'
	$(PY) -m pip install -q -e clients/python
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/vlaapi dev run

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)
	$(MAKE) test-tf-min

# Only transformers itself is swapped (--no-deps): its other requirements are the same range as the highest's.
$(TF_MIN_DIR)/.ok:
	$(PY) -m pip install -q --no-deps --target $(TF_MIN_DIR) transformers==$(TF_MIN)
	touch $@

test-tf-min: install $(TF_MIN_DIR)/.ok
	PYTHONPATH=$(TF_MIN_DIR):$(CURDIR) $(PY) -m pytest -q -p no:cacheprovider tests/workers/policies tests/golden
	PYTHONPATH=$(TF_MIN_DIR):$(CURDIR) $(PY) -c "import transformers as t; assert t.__version__ == '$(TF_MIN)', t.__version__"

# The deployment, for real (issue 23): builds the images with podman (the Debian base by debootstrap when
# missing), brings compose.yaml's dev profile up, drives it, and takes it down leaving nothing behind.
# Needs root with podman, runc and debootstrap (.ci/run installs them); `make test` needs none of it.
PODMAN_COMPOSE_VENV := .data/podman-compose-venv
$(PODMAN_COMPOSE_VENV)/bin/podman-compose:
	python3 -m venv $(PODMAN_COMPOSE_VENV)
	$(PODMAN_COMPOSE_VENV)/bin/pip install -q 'podman-compose==1.6.0'

test-containers: install $(PODMAN_COMPOSE_VENV)/bin/podman-compose
	ops/containers/build.sh
	VLAAPI_CONTAINER_TESTS=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/containers $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m ops.bench.policy_latency --tiny
	$(PY) -m ops.bench.safety
	$(PY) -m ops.bench.pipeline
	$(PY) -m ops.bench.batching
	$(PY) -m ops.bench.replay
	$(PY) -m ops.bench.cpu_budget

# Regenerates tests/golden/*.npz from the reference implementations, each in its own venv under
# .data/golden-envs (see ops/golden/). `make test` only reads the committed files.
golden: install
	$(PY) -m ops.golden build $(GOLDEN_ARGS)

clean:
	-test -x $(VENV)/bin/vlaapi && $(VENV)/bin/vlaapi dev stop
	rm -rf .data
