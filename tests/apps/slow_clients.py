"""Endpoints for the slow-client tests: a hello, a large response returned whole or streamed,
and an upload that reads its body."""

BLOCK = b"x" * 65536


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    size = int(query.get("size", "0"))
    if path == "/whole":
        body = b"x" * size
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return (BLOCK[: min(len(BLOCK), size - i)] for i in range(0, size, len(BLOCK)))
    if path == "/upload":
        data = environ["wsgi.input"].read()
        body = str(len(data)).encode()
    else:
        body = b"hello " + path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
