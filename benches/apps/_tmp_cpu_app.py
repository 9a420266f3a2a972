BODY = b"done"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
def app(environ, start_response):
    x = 0
    for i in range(34000):
        x += i * i
    start_response("200 OK", HEADERS)
    return [BODY]
