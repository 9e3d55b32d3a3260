# `make e2e` and `make test` work on a fresh machine that has a Docker Engine:
# each installs what it needs first (Debian's busybox-static, a venv with envkit[dev]).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps test lint e2e bench clean

setup: system-deps $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The tests and the demo make their base image from Debian's static busybox.
system-deps:
	@dpkg -s busybox-static >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; \
	  else \
	    echo "envkit needs Debian's busybox-static: sudo apt-get install busybox-static" >&2; exit 1; \
	  fi; }

test: setup
	$(BIN)/pytest -n auto

lint: setup
	$(BIN)/invoke lint

e2e: setup
	$(BIN)/invoke e2e

bench: setup
	$(BIN)/invoke bench

clean:
	rm -rf $(VENV) .envkit images/busybox/rootfs
