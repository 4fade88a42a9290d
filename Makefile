# `make test` and `make demo` set everything up themselves and are safe to run twice.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests and the demo need (installed only when missing, as root).
DEB_PACKAGES := iproute2 procps wireguard-go wireguard-tools bird2

.PHONY: test demo lint typecheck pytest bench bench-rib clean deps venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root to install)"; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv deps
	$(VENV)/bin/pytest -q

test: deps venv lint typecheck pytest

demo: deps venv
	$(PY) -m labs.demo

bench: venv
	$(PY) -m labs.bench_gossip_sim
	$(PY) -m labs.bench_gossip_real

# RIB: 200,000 paths through a 20-rule import policy, in and out; RSS with them loaded.
bench-rib: venv
	$(PY) -m labs.bench_rib

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
