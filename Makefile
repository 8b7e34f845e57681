# Two commands on a fresh machine: `make demo` and `make test`. Both run `make setup` first (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m firespotter synth out/demo-flight --frames 90 --size 320x240 --seed 7 --video
	@$(PY) -m firespotter replay out/demo-flight/flight.mp4 --out $(DEMO_OUT)

test: setup
	@$(PY) -m pytest -q -ra $(PYTEST_ARGS)

bench: setup
	@$(PY) bench/pipeline_overhead.py --json out/bench/pipeline_overhead.json

clean:
	rm -rf out .pytest_cache
