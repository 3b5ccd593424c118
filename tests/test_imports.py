"""Every module of the package imports on its own: an import cycle shows only when a module of the cycle is
the first one imported, as an ImportError on a partially initialised module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import musiclm

# Each module is imported with every musiclm module forgotten, so that it is the first of the package to
# load; third-party modules stay loaded, which keeps the whole walk to seconds.
IMPORT_EACH = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "musiclm" or m.startswith("musiclm.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\\n" + traceback.format_exc(limit=-3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def package_modules() -> list[str]:
    root = Path(musiclm.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_first():
    modules = package_modules()
    assert "musiclm.attributes" in modules and len(modules) > 50
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
