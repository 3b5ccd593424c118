# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m benchmarks

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache
