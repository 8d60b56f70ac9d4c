# ctkit: `make demo` and `make test` install everything a fresh Debian machine lacks.
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := nftables libnftables1 iptables ipset conntrack iproute2 python3-venv

.PHONY: deps install demo lint test test-fast test-ansible ansible-sanity bench clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: deps $(VENV)/.installed

demo: install
	bash netns-scripts/demo.sh

lint: install
	$(VENV)/bin/ruff check ctkit tests integration benchmarks ansible

test: install lint
	$(PY) -m pytest -q -p no:cacheprovider tests integration ansible/tests

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider tests

test-ansible: install
	$(PY) -m pytest -q -p no:cacheprovider ansible/tests

# ansible-test sanity for the collection, offline (its own virtualenv; not part of `make test`)
ansible-sanity: install
	bash ansible/tests/sanity.sh

# benchmarks/bench_*.py, as root: each builds and deletes its own throwaway namespaces (BENCH_ARGS: e.g. --repeat 5)
BENCH_ARGS ?=
bench: install
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
