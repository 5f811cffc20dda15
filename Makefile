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
	@echo "make test   lint, unit tests, integration tests on real lab hosts, molecule"
	@echo "make molecule  molecule test of every role and service (ROLES=\"common mail\" for some)"
	@echo "make bench  benchmarks (figures and ratios)"

setup:
	@scripts/setup-host

engine: setup
	@scripts/docker-engine start >/dev/null

demo: engine
	$(COOPHOST) lab up --name $(LAB) --hosts $(HOSTS)
	$(COOPHOST) -i inventories/$(LAB) host check
	@# members' names (git.cycle-works.test, ...) resolve before deploy: the lab ACME CA checks
	@# them when the hosts ask for each vhost's certificate
	$(COOPHOST) -i inventories/$(LAB) lab dns sync --name $(LAB)
	@# plan exits 1 when changes are pending, which they are on a new lab
	-$(COOPHOST) -i inventories/$(LAB) plan
	$(COOPHOST) -i inventories/$(LAB) deploy
	$(COOPHOST) -i inventories/$(LAB) plan
	@# the hosts themselves hold what was applied (a check-mode run; nothing changes)
	$(COOPHOST) -i inventories/$(LAB) drift
	@# the members' MX, SPF, DKIM and DMARC records, served by the lab DNS; those of the zone
	@# the co-op serves itself (dune-press.test, Knot on h2) pushed there by TSIG-signed updates,
	@# its DS recorded, and every record checked, the served zone's DNSSEC chain validated
	$(COOPHOST) -i inventories/$(LAB) lab dns sync --name $(LAB)
	$(COOPHOST) -i inventories/$(LAB) dns push
	$(COOPHOST) -i inventories/$(LAB) dns ds
	$(COOPHOST) -i inventories/$(LAB) dns check --dnssec
	@# each service's own end-to-end probe; mail: a message from one member to a member on
	@# another host, delivered, DKIM-signed, over TLS; git: a push over SSH with the member's
	@# key, the same commits cloned over HTTPS from its vhost, its cgit page; nextcloud: each
	@# instance's preflight page over TLS, from the member's own pool, database and Redis
	$(COOPHOST) -i inventories/$(LAB) lab probe --name $(LAB)
	@# upstream releases reach hosts verified: a release the lab makes and signs itself (no
	@# upstream release server is reachable here) fetched on the controller (gpgv against the
	@# pinned key, SHA-256), served by the co-op's mirror (h1), fetched and checked by a host
	$(COOPHOST) -i inventories/$(LAB) lab artifact --name $(LAB)
	$(COOPHOST) -i inventories/$(LAB) deploy
	$(COOPHOST) -i inventories/$(LAB) artifacts probe h$(HOSTS) lab-release \
		--ca-file inventories/$(LAB)/.coophost/lab/acme-roots.pem
	@# every unit's data to the backup host b1 (append-only, encrypted per member), then a
	@# drill: each unit's latest archive restored and compared file by file with its manifest
	$(COOPHOST) -i inventories/$(LAB) backup run
	$(COOPHOST) -i inventories/$(LAB) backup drill
	$(COOPHOST) -i inventories/$(LAB) backup list
	@echo "demo: the lab co-op '$(LAB)' is deployed on $(HOSTS) hosts and matches its registry;"
	@echo "demo: its DNS answers every member record (dune-press.test signed, from Knot on h2)"
	@echo "demo: and mail between members on two hosts"
	@echo "demo: arrived DKIM-signed over TLS; a member's push over SSH came back byte for byte"
	@echo "demo: over HTTPS from its own vhost and shows on its cgit page (the checks above);"
	@echo "demo: a signed release went controller -> mirror h1 -> h$(HOSTS), checked at each step"
	@echo "demo: bread-coop's Nextcloud on h1 answered over TLS from its own PHP pool with its"
	@echo "demo: own database and Redis, prepared up to Nextcloud's archive; Nextcloud itself"
	@echo "demo: is not installed: its archive needs an upstream this machine cannot reach;"
	@echo "demo: every unit is backed up on b1 and its latest archive restored identical."
	@echo "demo: try 'coophost lab status', 'coophost runs list', 'coophost lab ssh h1';"
	@echo "demo: 'coophost lab down' removes the lab."

lint: setup
	$(BIN)/ruff check coophost tests bench roles services
	$(BIN)/mypy coophost
	@# each service's hooks.py is its own module named hooks: one mypy run per folder
	for hooks in services/*/hooks.py; do $(BIN)/mypy "$$hooks" || exit 1; done
	$(BIN)/ansible-lint --profile production playbooks roles services

unit: setup
	$(BIN)/pytest -q -m "not lab" tests/unit -n 2

integration: engine
	$(BIN)/pytest -q -m lab tests/integration

test: lint unit integration molecule

# Each role's and service's molecule scenario (converge, idempotence, testinfra), one at a
# time; ROLES="mail" picks some.
molecule: engine
	scripts/molecule $(ROLES)

bench: engine
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/git.py
	$(BIN)/python bench/backup.py
	@# health checks need a deployed co-op: the demo lab (`make demo` first)
	$(BIN)/python bench/status.py --inventory inventories/$(LAB)

clean-lab: setup
	$(COOPHOST) lab down --name $(LAB)
