# The commands of the README: `make demo` (the main job), `make serve` (the web page) and `make test`.
.PHONY: setup demo serve test lint bench clean
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

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache
