# photo-sync: `make demo` runs the main job on a fresh machine, `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_PHOTOS ?= 300 1000
FLEET_STORES ?= 50
GATEWAY_PHOTOS ?= 300
OPS_PHOTOS ?= 1000
OPS_SMALL_PHOTOS ?= 10000

.PHONY: help bootstrap test test-python test-fleet lint collection collection-check demo demo-local demo-down bench bench-fleet bench-gateway bench-ops bench-report wheels clean

help:
	@echo "make demo   - bring up HO + 3 stores as containers and roll photo-sync out to them"
	@echo "make test   - every test: pytest against real services, lint, molecule scenarios"
	@echo "make bench  - benchmarks against peers, one run over every size (BENCH_PHOTOS=\"$(BENCH_PHOTOS)\")"
	@echo "make bench-fleet - one HO, FLEET_STORES=$(FLEET_STORES) stores syncing at once"
	@echo "make bench-gateway - downloads and full syncs through the nginx gateway vs direct S3 and rclone"
	@echo "make bench-ops - verify vs full sync, the store's photo server vs nginx"
	@echo "make bench-report - regenerate bench/RESULTS.md from bench/results/*.json"
	@echo "make demo-local - the HO API and one edge pull on this machine, no containers"
	@echo "make collection - build the photosync.fleet collection tarball into build/"
	@echo "make collection-check - build it, install it, ansible-test sanity, FQCN checks"
	@echo "make wheels - the wheelhouses the roles ship (build/wheels; the EE carries them)"

bootstrap:
	scripts/bootstrap.sh test,fleet

# Molecule and ansible-playbook come from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SCENARIOS ?= ho_sync_api edge_photo_sync fleet

# Stage by stage (lint, pytest, each molecule scenario), every stage even after a failure,
# then a table of each stage's result and wall time (scripts/test-stages.sh).
# pytest runs on PYTEST_WORKERS processes, each with its own PostgreSQL, S3 and HO stacks;
# --dist loadfile keeps a test file (and its module fixtures) on one worker.
PYTEST_WORKERS ?= 2
PYTEST_XDIST := $(if $(filter-out 0 1,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile)
test: bootstrap
	PYTEST_ARGS="$(PYTEST_XDIST) $(PYTEST_ARGS)" SCENARIOS="$(SCENARIOS)" scripts/test-stages.sh

lint: bootstrap
	$(VENV)/bin/ruff check src library module_utils plugins tests bench scripts/build-collection.py scripts/ansible-test-get-pip.py
	$(VENV)/bin/yamllint -s roles playbooks inventories molecule monitoring collection execution-environment.yml
	ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg $(VENV)/bin/ansible-lint roles playbooks

# The photosync.fleet collection, assembled from library/, module_utils/, roles/ and
# playbooks/ (scripts/build-collection.py), and checked as reviewers check one.
collection: bootstrap
	$(PY) scripts/build-collection.py

collection-check: bootstrap
	scripts/collection-check.sh

# The wheelhouses the roles ship to HO and the stores (what playbooks/build-wheels.yml
# builds), in build/wheels; the execution environment carries them.
wheels: bootstrap
	$(PY) scripts/fleet-wheels.py . build/wheels

# One Docker engine and one base image for every scenario of the run.
test-fleet: bootstrap
	scripts/docker-engine.sh
	scripts/fleet-test.sh $(SCENARIOS)

demo-local: bootstrap
	PYTHONPATH=tests $(PY) -m support.demo

demo: bootstrap
	scripts/demo.sh

demo-down:
	scripts/demo-down.sh

clean:
	rm -rf build dist .pytest_cache

# bootstrap installs rclone and wrk, the peers the bench runs.
bench: bootstrap
	$(PY) -m bench.run --photos $(BENCH_PHOTOS)

# One HO and FLEET_STORES agents on loopback (bench/fleet.py); writes bench/results/fleet-N.json.
bench-fleet: bootstrap
	$(PY) -m bench.fleet --stores $(FLEET_STORES)

# The HO gateway (roles/ho_gateway's nginx.conf on loopback) against direct S3 and rclone;
# writes bench/results/gateway.json and regenerates bench/RESULTS.md (the README's capacity
# figures quote it: tests/test_bench.py says which to update).
bench-gateway: bootstrap
	$(PY) -m bench.gateway --photos $(GATEWAY_PHOTOS)

# verify vs full sync and the photo server vs nginx (bench/verify_serve.py, needs wrk and nginx);
# writes bench/results/verify-serve.json and regenerates bench/RESULTS.md from it.
bench-ops: bootstrap
	$(PY) -m bench.verify_serve --photos $(OPS_PHOTOS) --small-photos $(OPS_SMALL_PHOTOS) \
		--json bench/results/verify-serve.json
	$(PY) -m bench.report

bench-report: bootstrap
	$(PY) -m bench.report --plots
