"""The engine is a library: importing any of its modules pulls in no UI package.

Front ends (the CLI, the app) depend on the engine, never the other way round; this keeps
notebooks and scripts free of Textual/Rich/Typer and keeps the use cases in one place.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ldlm_engine

UI_PACKAGES = ("textual", "rich", "typer", "click", "ldlm_tui")


def test_engine_imports_no_ui_package() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules(ldlm_engine.__path__))
    assert {"plans", "session", "runtime", "training", "sampling"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('ldlm_engine.' + m)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded = set(res.stdout.split())
    assert "torch" in loaded  # the probe really imported the engine
    assert not loaded & set(UI_PACKAGES), sorted(loaded & set(UI_PACKAGES))


def test_engine_source_names_no_ui_package() -> None:
    """Also lazily: no function-level import of a UI package hides in the engine."""
    from pathlib import Path

    root = Path(ldlm_engine.__file__).parent
    for path in sorted(root.glob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0]
                assert top not in UI_PACKAGES, f"{path.name}:{n}: {line.strip()}"


def test_the_app_opens_without_importing_torch() -> None:
    """`ldlm watch` and the idle app import neither torch nor numpy (seconds of start-up on a
    busy machine); the engine modules that need torch load when training or sampling starts."""
    code = (
        "import sys\n"
        "import ldlm_tui.app, ldlm_tui.cli\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded = set(res.stdout.split())
    assert "textual" in loaded  # the probe really imported the app
    assert not loaded & {"torch", "numpy"}, sorted(loaded & {"torch", "numpy"})
