"""Starlette app: routes, a streaming response, lifespan with state."""

import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

STATE_DIR = os.environ.get("STATE_DIR")


def record(line):
    if STATE_DIR:
        with open(os.path.join(STATE_DIR, "events"), "a") as f:
            f.write(line + "\n")


@contextlib.asynccontextmanager
async def lifespan(app):
    record("startup")
    yield {"greeting": "hello from lifespan", "started": True}
    record("shutdown")


async def homepage(request):
    return PlainTextResponse("starlette home")


async def user(request):
    return JSONResponse({"user": request.path_params["name"], "greeting": request.state.greeting})


async def stream(request):
    async def gen():
        for i in range(5):
            yield f"part {i}\n".encode()
            await asyncio.sleep(0.05)

    return StreamingResponse(gen(), media_type="text/plain")


async def echo(request):
    data = await request.json()
    return JSONResponse({"echo": data, "length": len(await request.body())})


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/users/{name}", user),
        Route("/stream", stream),
        Route("/echo", echo, methods=["POST"]),
    ],
    lifespan=lifespan,
)
