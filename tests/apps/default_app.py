"""Module whose WSGI callable uses the default name ``application``."""


def application(environ, start_response):
    body = b"default application"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
