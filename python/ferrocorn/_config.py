"""Loads a Gunicorn config file (``gunicorn.conf.py``, ``file:PATH`` or ``python:MODULE``).

The file is executed as Python, as Gunicorn does; its module globals are returned and the Rust
core keeps those whose names are settings (or hooks) and validates them against the registry.
"""

import importlib
import importlib.machinery
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


# The logger layout Gunicorn's logconfig_dict users build on: "gunicorn.error" to stderr and
# "gunicorn.access" to stdout, with Gunicorn's line format. A user dict is merged over it.
_LOGGING_DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True, "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True, "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
            "class": "logging.Formatter",
        }
    },
}


def _merged(user):
    """The defaults updated by ``user``; the named sections are merged one level deep so a user
    dict may add handlers without restating the default ones."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _LOGGING_DEFAULTS.items()}
    for key, value in user.items():
        if key in ("loggers", "handlers", "formatters", "filters") and isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return config


def configure_logging(logconfig, logconfig_dict, logconfig_json):
    """Apply a Python logging configuration the way Gunicorn accepts it.

    ``logconfig_dict`` (from the config file) wins, then ``logconfig_json`` (a JSON file with a
    dictConfig), then ``logconfig`` (a fileConfig ini file). Returns True when one was applied;
    the server then sends its error log to ``gunicorn.error`` and access log to
    ``gunicorn.access``.
    """
    import logging.config

    if logconfig_json and not logconfig_dict:
        import json

        with open(logconfig_json) as f:
            logconfig_dict = json.load(f)
    if logconfig_dict:
        logging.config.dictConfig(_merged(logconfig_dict))
        return True
    if logconfig:
        if not os.path.exists(logconfig):
            raise FileNotFoundError(f"log config file {logconfig!r} doesn't exist")
        defaults = {"__file__": logconfig, "here": os.path.dirname(os.path.abspath(logconfig))}
        logging.config.fileConfig(logconfig, defaults=defaults, disable_existing_loggers=False)
        return True
    return False
