"""ferrocorn: a Gunicorn-compatible application server for Python web apps, with a Rust core.

Run ``ferrocorn [OPTIONS] APP`` (or ``python -m ferrocorn``). The server itself lives in the
native module ``ferrocorn._native``; this package holds only the console entry, the demo app and
typed stubs.
"""

from ferrocorn._native import __version__

__all__ = ["__version__"]
