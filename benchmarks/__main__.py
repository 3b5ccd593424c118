"""``make bench`` / ``python -m benchmarks [NAME ...]``: run every benchmarks/bench_*.py (or the named ones).

Each module has ``main()`` that prints its figures (medians over repeats, the machine and the command)
and writes them to ``benchmarks/results/NAME.json``.
"""

import importlib
import pkgutil
import sys
from pathlib import Path

names = sys.argv[1:] or sorted(
    m.name.removeprefix("bench_")
    for m in pkgutil.iter_modules([str(Path(__file__).parent)])
    if m.name.startswith("bench_")
)
for name in names:
    print(f"== benchmark {name}", flush=True)
    importlib.import_module(f"benchmarks.bench_{name}").main()
