# coophost: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
COOPHOST := $(BIN)/coophost
LAB ?= lab
HOSTS ?= 3
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup engine demo test lint unit integration molecule bench clean-lab help

help:
	@echo "make demo   set up this machine, bring up the lab co-op, provision and prove it"
	@echo "make test   lint, unit tests, and integration tests on real lab hosts"
	@echo "make molecule  molecule test of every role (ROLES=\"common mail\" for some)"
	@echo "make bench  benchmarks (figures and ratios)"

setup:
	@scripts/setup-host

engine: setup
	@scripts/docker-engine start >/dev/null

demo: engine
	$(COOPHOST) lab up --name $(LAB) --hosts $(HOSTS)
	ansible-playbook -i inventories/$(LAB)/hosts.yml playbooks/site.yml
	$(COOPHOST) -i inventories/$(LAB) host check
	@echo "demo: lab '$(LAB)' is up and every host passed its baseline and preflight checks."
	@echo "demo: try 'coophost lab status' or 'coophost lab ssh h1'; 'coophost lab down' removes it."

lint: setup
	$(BIN)/ruff check coophost tests bench roles
	$(BIN)/mypy coophost
	$(BIN)/ansible-lint --profile production playbooks roles

unit: setup
	$(BIN)/pytest -q -m "not lab" tests/unit

integration: engine
	$(BIN)/pytest -q -m lab tests/integration

test: lint unit integration

# Each role's molecule scenario (converge, idempotence, testinfra), one at a time; ROLES="mail"
# picks some. Not part of `make test` yet: it takes minutes.
molecule: engine
	scripts/molecule $(ROLES)

bench: engine
	$(BIN)/python bench/plan.py

clean-lab: setup
	$(COOPHOST) lab down --name $(LAB)
