# Every target installs what it needs: Debian packages with apt-get (as root), Python ones in .venv.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
APT_PACKAGES := bind9-dnsutils dnsmasq dnsperf busybox-static nftables iproute2 iputils-ping procps \
                aardvark-dns util-linux etcd-server chromium \
                podman netavark runc containernetworking-plugins \
                golang-github-containernetworking-plugin-dnsname
PYTEST_ARGS ?=

.PHONY: run test bench soak fuzz lint deps venv clean

deps:
	@scripts/install-deps $(APT_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

run: deps venv
	scripts/run-demo

# The tests, then a bounded run of the packet fuzzer over its corpus (tests/fuzz).
FUZZ_SECONDS ?= 60
test: deps venv lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory fuzz

fuzz: venv
	FUZZ_SECONDS=$(FUZZ_SECONDS) PYTHON=$(VENV)/bin/python scripts/fuzz-smoke

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: deps venv
	$(VENV)/bin/python -m bench

# A long run under queries and container churn (docs/RELIABILITY.md has the last result).
SOAK_MINUTES ?= 30
soak: deps venv
	$(VENV)/bin/python -m bench.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
