# Every target installs what it needs: Debian packages with apt-get (as root), Python ones in .venv.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
APT_PACKAGES := bind9-dnsutils dnsmasq dnsperf busybox-static nftables iproute2 iputils-ping procps \
                aardvark-dns util-linux etcd-server
PYTEST_ARGS ?=

.PHONY: run test bench lint deps venv clean

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

test: deps venv lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: deps venv
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
