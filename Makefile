# `make test` is the whole gate: it builds .venv from a fresh clone, then runs
# ruff, the import contracts (lint-imports), mypy and pytest. CI (.ci/run) calls exactly that.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := operator/lth spark/lth_spark trainer/lth_trainer
# pip's file-index warnings say nothing about this project.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: help venv lint typecheck pytest test crd images demo demo-gradual demo-auto demo-transfer clean

help:
	@echo "make test    build .venv and run the whole gate (ruff, lint-imports, mypy, pytest)"
	@echo "make venv    only build .venv (all extras: operator, spark, trainer, export, dev)"
	@echo "make demo    build the MNIST demo archives and find a ticket with lth run (CPU, ~5 min)"
	@echo "make demo-gradual  the same tickets by the cheaper gradual search (spec.pruning.search, ~2 min)"
	@echo "make demo-auto  the demo with its rewind point chosen by instability analysis (rewindTo auto, ~8 min)"
	@echo "make demo-transfer  a ticket found on the digits 0-4, transferred to 5-9, with controls (~4 min)"
	@echo "make crd     regenerate crds/ and the chart's copy from the API models"
	@echo "make images REGISTRY=... [TAG=...]  build and push the operator, Spark and trainer images"
	@echo "             (docker, podman or buildah; TAG defaults to the project version) and print the chart values"
	@echo "make clean   remove .venv and caches"

# pip compiles at install (219 s, 146 s with --no-compile) and that must stay: under
# PYTHONDONTWRITEBYTECODE, as CI and the stand-in pods run, nothing is compiled later, and
# every process compiled torch again (pytest 17:34 instead of 11:38).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[operator,spark,trainer,export,dev]' 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import lth, lth_spark, lth_trainer, torch, pyspark, kopf"
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy $(PACKAGES)

# One pytest worker per core (at most 4: each worker starts its own Spark, torchrun and
# emulators), a test file per worker so a module's fixtures are built once, in the order
# collected (xdist's default starts the files with the most tests, leaving the slowest e2e
# files, of one to three tests each, to run last and alone).
# `.venv/bin/pytest tests/...` alone runs in one process.
pytest: venv
	$(BIN)/pytest --numprocesses auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

test: lint typecheck pytest

crd: venv
	$(BIN)/lth crd > crds/lotteryticketruns.lth.dev.yaml
	cp crds/lotteryticketruns.lth.dev.yaml charts/lth-operator/crds/

# images/build.sh needs no .venv: only bash and a builder (docker with an engine, podman or buildah).
REGISTRY ?=
TAG ?=
PLATFORM ?=
images:
	@REGISTRY="$(REGISTRY)" TAG="$(TAG)" PLATFORM="$(PLATFORM)" images/build.sh

DEMO_INPUT := runs/demo-input

$(DEMO_INPUT)/ILSVRC2012_img_train.tar: | venv
	$(BIN)/python -m lth_spark.demo $(DEMO_INPUT)

demo: venv $(DEMO_INPUT)/ILSVRC2012_img_train.tar
	$(BIN)/lth run examples/demo.yaml

demo-gradual: venv $(DEMO_INPUT)/ILSVRC2012_img_train.tar
	$(BIN)/lth run examples/demo-gradual.yaml

demo-auto: venv $(DEMO_INPUT)/ILSVRC2012_img_train.tar
	$(BIN)/lth run examples/demo-auto.yaml

demo-transfer: venv $(DEMO_INPUT)/ILSVRC2012_img_train.tar
	$(BIN)/lth run examples/digits-0to4.yaml
	$(BIN)/lth run examples/transfer-digits.yaml

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
