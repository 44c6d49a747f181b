# cdlc-stream. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := ffmpeg pkg-config cmake g++ libavcodec-dev libavformat-dev libavutil-dev \
	libswscale-dev libswresample-dev libavfilter-dev nginx-light libnginx-mod-http-js wrk chromium redis-server \
	rabbitmq-server libssl-dev

.PHONY: setup apt venv native node console proto demo test test-fast bench lint clean
setup: apt venv native node console proto

# Debian packages: installed only when one is missing, so a second run is instant.
apt: $(STAMPS)/apt
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml setup.py | $(STAMPS)/apt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -U pip setuptools wheel pybind11
	# no build isolation: setup.py's CMake run then shares build/ with `make native`.
	# compat mode: a plain path in a .pth, where the default import-hook finder
	# costs every Python start (each `cdlc` command, each test subprocess) ~25 ms.
	# setuptools calls compat mode transitional: when it is gone, the default.
	$(VPY) -m pip install -q --no-build-isolation --config-settings editable_mode=compat -e '.[dev]' \
	  || $(VPY) -m pip install -q --no-build-isolation -e '.[dev]'
	@touch $@

# The native module: CMake rebuilds only what changed. Then our packages are
# byte-compiled, as pip does for installed ones: where PYTHONDONTWRITEBYTECODE is
# set (CI, containers) every `cdlc` command would otherwise compile them from
# source, ~9 % of the instructions of a package-only ingest.
native: $(STAMPS)/venv
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(abspath $(VPY)) >/dev/null
	@cmake --build build -j2 --target _core | grep -vE '^\[|Built target|Consolidate|g?make\[[0-9]+\]|^gmake' || true
	@test -n "$$(ls native/_core*.so 2>/dev/null)"
	@$(VPY) -m compileall -q engine metadata origin packager native bench >/dev/null

# Players for the e2e tests (hls.js, dash.js, Shaka), pinned in package.json.
node: $(STAMPS)/node
$(STAMPS)/node: package.json
	@if [ -f package-lock.json ]; then npm ci --silent --no-audit --no-fund; else npm install --silent --no-audit --no-fund; fi
	@touch $@

# The console's browser libraries -> origin/console/static/vendor (npm ci only
# when its lock changes).
console: $(STAMPS)/node
	@origin/console/build.sh

# The gRPC API's Python code (proto/gen, git-ignored), regenerated when a .proto changes.
proto: $(STAMPS)/proto
$(STAMPS)/proto: $(wildcard proto/cdlc/stream/v1/*.proto) proto/generate.py | $(STAMPS)/venv
	@$(VPY) proto/generate.py
	@touch $@

demo: setup
	$(VENV)/bin/cdlc demo

test: setup
	$(VPY) -m pytest -q

test-fast: native proto
	$(VPY) -m pytest -q -m "not e2e and not slow"

bench: setup
	$(VPY) -m bench

lint: venv node proto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	npx --no-install buf lint proto

clean:
	rm -rf build $(STAMPS) native/_core*.so
