# `make e2e` and `make test` work on a fresh machine that has a Docker Engine:
# each installs what it needs first (Debian's busybox-static, a venv with envkit[dev]).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps test test-engines lint e2e bench dist clean

setup: system-deps $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The tests make their base image from Debian's static busybox; the demo stack's
# base is a Debian rootfs made by mmdebstrap (images/base/recipe.toml); the remote-cache
# tests run Debian's docker-registry on 127.0.0.1 with a config of their own; Debian's
# docker-compose (v1) is a second opinion on envkit's reading of compose files; OpenSSH's
# client (ssh, ssh-keygen) reaches the ssh:// engine of tests/integration/test_ssh_engine.py.
SYSTEM_PACKAGES := busybox-static mmdebstrap docker-registry docker-compose openssh-client
system-deps:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	    systemctl disable --now docker-registry >/dev/null 2>&1 || true; \
	  else \
	    echo "envkit's tests and demo need Debian's $(SYSTEM_PACKAGES): sudo apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; \
	  fi; }

test: setup
	$(BIN)/pytest -n auto

# The engine matrix (tests/engines/run.py): the integration tiers that exercise engine
# differences, run inside Debian's Docker 26.1 (classic and containerd image stores) and
# Podman 5.4, each a container on this machine's engine. ENGINES=containerd runs one.
ENGINES ?=
test-engines: setup
	$(BIN)/python tests/engines/run.py $(foreach e,$(subst $(comma), ,$(ENGINES)),--engine $(e))

comma := ,

lint: setup
	$(BIN)/invoke lint

e2e: setup
	$(BIN)/invoke e2e

bench: setup
	$(BIN)/invoke bench

# The sdist and the wheel, built from this checkout into dist/ (setuptools from the venv). It
# needs only the venv: not the system packages (no root, no apt) that the tests and the demo need.
dist: $(STAMP)
	rm -rf dist build  # setuptools reuses build/: a module deleted since would come back
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir dist .

clean:
	rm -rf $(VENV) .envkit dist build
