# The two commands of README.md. Both create .venv if it is missing and install the
# package with pinned dependencies (constraints.txt pins torch 2.13.0, a CPU build here).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint schema gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/default
	$(BIN)/spikescale summary results/$$($(BIN)/python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['dataset']['name'])")

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/run.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

# train and evaluate with device: cuda against the CPU on a reduced config (needs a CUDA GPU
# and a CUDA build of torch; not part of `make test`)
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

schema: $(STAMP)
	$(BIN)/spikescale schema --out workflow/schemas/params.schema.json

clean:
	rm -rf .snakemake data models results logs
