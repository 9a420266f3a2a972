"""ASGI app that rejects the lifespan scope (like Django's handler): `auto` must go on serving."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']}")
    body = repr("state" in scope).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
