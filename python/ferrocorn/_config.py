"""Loads a Gunicorn config file (``gunicorn.conf.py``, ``file:PATH`` or ``python:MODULE``).

The file is executed as Python, as Gunicorn does; its module globals are returned and the Rust
core keeps those whose names are settings (or hooks) and validates them against the registry.
"""

import importlib
import importlib.util
import os
import sys
import types


def load(location: str) -> dict:
    """Execute the config at ``location`` and return its global names and values."""
    if location.startswith("python:"):
        module = importlib.import_module(location[len("python:"):])
        return dict(vars(module))
    path = location[len("file:"):] if location.startswith("file:") else location
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} doesn't exist")
    loader = importlib.machinery.SourceFileLoader("__config__", path)
    spec = importlib.util.spec_from_file_location("__config__", path, loader=loader)
    module = types.ModuleType("__config__")
    module.__file__ = path
    sys.modules["__config__"] = module
    spec.loader.exec_module(module)
    return dict(vars(module))
