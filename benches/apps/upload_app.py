"""Upload sink: reads the whole request body from ``wsgi.input`` in 64 KiB pieces (as a
multipart parser or a file-saving view does) and answers with the byte count. ``GET /`` reads
nothing and answers ``0``."""


def app(environ, start_response):
    body = environ["wsgi.input"]
    received = 0
    while True:
        piece = body.read(65536)
        if not piece:
            break
        received += len(piece)
    answer = str(received).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]
