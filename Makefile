# The commands of the README: `make demo` (the main job), `make serve` (the web page) and `make test`.
.PHONY: setup demo serve test lint bench clean device-prep device-train
HOST ?= 127.0.0.1
PORT ?= 7860

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

serve: setup
	.venv/bin/musiclm serve --host $(HOST) --port $(PORT)

test: setup lint
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench: setup
	.venv/bin/python -m benchmarks

# A GPU run in one call (docs/training.md, "Training on a GPU"): `make device-prep TOKENS=tokens/ [VALID=tokens_valid/]` here
# packs what the run carries into .device/; `make device-train STAGE=coarse MINUTES=6` runs on the GPU machine,
# which has no .venv (so no setup).
device-prep: setup
	@bash scripts/device_prep.sh $(TOKENS) $(VALID)

STAGE ?= coarse
MINUTES ?= 6
PRESET ?= small
device-train:
	@bash scripts/device_train.sh $(STAGE) $(MINUTES) $(PRESET)

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache
