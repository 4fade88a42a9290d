# `make test` and `make demo` set everything up themselves and are safe to run twice.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests and the demo need (installed only when missing, as root).
DEB_PACKAGES := iproute2 procps wireguard-go wireguard-tools bird2 iptables iputils-ping mininet keepalived bridge-utils curl chromium

.PHONY: test demo lint typecheck pytest attacks bench bench-health bench-rib bench-transit bench-bgp clean deps venv

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
	$(VENV)/bin/pytest -q --durations=30  # the slowest tests named in every CI log: where the time goes

test: deps venv lint typecheck pytest

# The bounded attack suite alone (also part of `make pytest`): tests/test_attacks.py and the cases it names.
attacks: venv
	$(VENV)/bin/pytest -q -m attack

demo: deps venv
	$(PY) -m labs.demo

bench: venv
	$(PY) -m labs.bench_gossip_sim
	$(PY) -m labs.bench_gossip_real

# Health checks: withdrawal time against interval x unhealthy threshold; 1,000 checks on one agent.
bench-health: venv
	$(PY) -m labs.bench_health --json labs/results/bench_health.json

# RIB: 200,000 paths through a 20-rule import policy, in and out; RSS with them loaded.
bench-rib: venv
	$(PY) -m labs.bench_rib

# BGP speaker: planner decision -> route in BIRD (p50, max over 20 toggles); 100,000 prefixes from BIRD
# into the RIB and the kernel, with RSS. Needs root: namespaces, BIRD.
bench-bgp: deps venv
	$(PY) -m labs.bench_bgp --json labs/results/bench_bgp.json

# Transit: time to switch to a relay when A-B drops everything, time to fail back, switches under 20%
# loss for 5 minutes (LOSS_DURATION=30 for a quick run). Needs root: namespaces, wireguard-go, iptables.
LOSS_DURATION ?= 300
bench-transit: deps venv
	$(PY) -m labs.bench_transit --loss-duration $(LOSS_DURATION) --json labs/results/bench_transit.json

# Lab scenarios (mininet, real agents, BIRD; needs root): make lab-vip-failover, lab-holdoff, lab-crash,
# lab-transit, lab-policy, lab-scale
lab-%: deps venv
	$(PY) -m labs.$(subst -,_,$*)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
