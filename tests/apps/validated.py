"""A correct WSGI app wrapped in ``wsgiref.validate.validator``.

Warnings are turned into errors while the app (and its iterable) run. Any validator
AssertionError or warning is printed to stderr with the marker VALIDATION FAILURE and
re-raised, so the server answers 500 (when headers are not yet sent).
"""

import sys
import traceback
import warnings
from wsgiref.validate import validator


def _inner(environ, start_response):
    inp = environ["wsgi.input"]
    chunks = []
    while True:
        c = inp.read(1024)
        if not c:
            break
        chunks.append(c)
    body = b"".join(chunks)
    style = "list"
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith("style="):
            style = part[6:]
    info = (
        f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')} ?{environ.get('QUERY_STRING', '')} "
        f"len={len(body)}\n"
    ).encode("latin-1")
    payload = info + body
    if style == "gen":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield info
            yield body

        return gen()
    if style == "write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(info)
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
    return [payload]


_validated = validator(_inner)


def _report(exc):
    sys.stderr.write("VALIDATION FAILURE: " + "".join(traceback.format_exception(exc)))
    sys.stderr.flush()


class _Guarded:
    def __init__(self, result):
        self._result = result
        self._it = None

    def __iter__(self):
        return self

    def __next__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                if self._it is None:
                    self._it = iter(self._result)
                return next(self._it)
            except StopIteration:
                raise
            except (AssertionError, Warning) as e:
                _report(e)
                raise

    def close(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                self._result.close()
            except (AssertionError, Warning) as e:
                _report(e)
                raise


def app(environ, start_response):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            result = _validated(environ, start_response)
        except (AssertionError, Warning) as e:
            _report(e)
            raise
    return _Guarded(result)
