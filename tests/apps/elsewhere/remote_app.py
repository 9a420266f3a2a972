"""An app that is only importable through --pythonpath or --chdir (not in tests/apps)."""


def app(environ, start_response):
    body = b"remote app"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
