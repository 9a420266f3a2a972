"""Importing this module fails."""

import this_module_does_not_exist_ferrocorn  # noqa: F401


def app(environ, start_response):  # pragma: no cover
    start_response("200 OK", [])
    return [b""]
