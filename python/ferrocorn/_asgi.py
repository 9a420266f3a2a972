"""The loop side of ferrocorn's ``asgi`` worker class.

Sockets, HTTP parsing and response framing stay in Rust (the worker's tokio runtime, driven from
this loop's thread through the native ``LoopDriver``); this module only runs the asyncio loop
(uvloop when installed): lifespan, the readers that drive the runtime, and one task per request
that calls ``app(scope, receive, send)`` with the scope and channels the native ``AsgiRequest``
provides.
"""

import asyncio
import traceback

from ferrocorn import _native


def serve(app, bridge, start_io, loop_kind, lifespan_mode, disconnect_grace=3):
    """Run the loop until the worker's I/O stops; returns the worker's exit status."""
    loop = _new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_main(app, bridge, start_io, lifespan_mode, disconnect_grace))
    finally:
        loop.close()


def _new_loop(kind):
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def _main(app, bridge, start_io, lifespan_mode, disconnect_grace):
    loop = asyncio.get_running_loop()
    lifespan = _Lifespan(app, lifespan_mode)
    try:
        await lifespan.startup()
    except _LifespanFailed as exc:
        _native.log("error", f"ASGI lifespan startup failed: {exc}")
        return 3
    state = lifespan.state if lifespan.used else None
    stopped = loop.create_future()

    create_task = loop.create_task
    # Strong references to the running requests' tasks (the loop keeps only weak ones), keyed
    # by the request object (HTTP: its id); each request removes itself when it ends.
    running = {}

    def on_ready():
        for kind, item in bridge.drain():
            if kind == "http":
                running[item.id] = create_task(_http(app, item, state, running))
            elif kind == "websocket":
                running[item] = create_task(_websocket(app, item, state, running))
            elif kind == "abandoned":
                # The connection ended before the response was complete; the app still runs.
                task = running.get(item)
                if task is not None:
                    loop.call_later(disconnect_grace, _cancel_abandoned, task, disconnect_grace)
            elif kind == "ws":
                queue, message = item
                queue.put_nowait(message)
            elif kind == "wake":
                # A waiting receive(): body arrived or the client is gone; it looks again.
                if not item.done():
                    item.set_result(None)
            elif kind == "stop" and not stopped.done():
                stopped.set_result(item)

    driver = start_io()

    def on_io():
        # The runtime has sockets, signals or wake-ups to handle: run it, then hand what it
        # produced (requests, wake-ups, the stop) to Python.
        if driver.drive():
            loop.call_soon(on_io)
        on_ready()

    def on_tick():
        if driver.tick():
            loop.call_soon(on_io)
        on_ready()

    def on_listeners():
        # A connection is waiting: the listeners are in this loop's epoll under
        # listener_fd's token, so that one waiting worker is woken per connection.
        if driver.listeners_ready():
            loop.call_soon(on_io)
        on_ready()

    loop.add_reader(driver.runtime_fd, on_io)
    loop.add_reader(driver.tick_fd, on_tick)
    loop.add_reader(driver.listener_fd, on_listeners)
    on_io()  # the first drive installs the stop signals' handlers and starts accepting
    graceful = await stopped
    loop.remove_reader(driver.runtime_fd)
    loop.remove_reader(driver.tick_fd)
    driver.close()  # the listeners leave the loop's epoll with the runtime
    loop.remove_reader(driver.listener_fd)
    tasks = set(running.values())
    if tasks:
        # The runtime is gone with every connection; what still runs has no client.
        await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()
    if graceful:
        await lifespan.shutdown()
    return 0


async def _receive_wait(req):
    """receive() when nothing is ready: sleep until the connection has body or the client is
    gone (the loop resolves the future with None), then look again."""
    loop = asyncio.get_running_loop()
    while True:
        woken = loop.create_future()
        message = req.poll_receive(woken)
        if message is not None:
            return message
        await woken


def _cancel_abandoned(task, grace):
    if not task.done():
        _native.log("info", f"Cancelling an ASGI request {grace}s after its connection ended "
                    "(asgi_disconnect_grace_period)")
        task.cancel()


async def _push(channel, call, *args):
    """Hand a message to the connection (``call`` is a method of ``channel``, a request or a
    WebSocket session); a False return means its queue is full: wait until the connection
    takes a message (the connection resolves the future through the bridge), then call again."""
    while not call(*args):
        room = asyncio.get_running_loop().create_future()
        if channel.wait_room(room):
            await room


async def _http(app, req, state, running):
    # receive/send are native: they return complete awaitables unless something has to wait
    # (http.disconnect, a full response buffer), so most awaits never suspend the task.
    try:
        await app(req.scope(state), req.receive, req.send)
    except Exception:
        _native.log("error", "Exception in ASGI application\n" + traceback.format_exc().rstrip())
        req.fail()
    finally:
        req.finish()
        running.pop(req.id, None)


async def _websocket(app, ws, state, running):
    scope = ws.scope(state)
    queue = asyncio.Queue()
    for message in ws.attach_queue(queue):
        queue.put_nowait(message)
    connected = False

    async def receive():
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        return await queue.get()

    async def send(message):
        kind = message["type"]
        if kind == "websocket.accept":
            await _push(ws, ws.accept, message.get("subprotocol"), message.get("headers", ()))
        elif kind == "websocket.send":
            await _push(ws, ws.send, message.get("text"), message.get("bytes"))
        elif kind == "websocket.close":
            await _push(ws, ws.close, message.get("code", 1000), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            await _push(ws, ws.deny_start, message["status"], message.get("headers", ()))
        elif kind == "websocket.http.response.body":
            await _push(ws, ws.deny_body, message.get("body", b""), message.get("more_body", False))

    try:
        await app(scope, receive, send)
    except Exception:
        _native.log("error", "Exception in ASGI application\n" + traceback.format_exc().rstrip())
        ws.fail()
    finally:
        ws.finish()
        running.pop(ws, None)


class _LifespanFailed(Exception):
    pass


class _Lifespan:
    """ASGI lifespan: startup before the first request, shutdown on a graceful stop."""

    def __init__(self, app, mode):
        self.app = app
        self.mode = mode
        self.state = {}
        self.used = False

    async def startup(self):
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = loop.create_task(self._run(scope))
        await self.queue.put({"type": "lifespan.startup"})
        await asyncio.wait({self.started, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not self.started.done():
            error = self.task.exception() if not self.task.cancelled() else None
            if self.mode == "on":
                raise _LifespanFailed(f"the app does not support lifespan: {error!r}")
            _native.log("info", "ASGI 'lifespan' protocol appears unsupported.")
            return
        ok, message = self.started.result()
        if not ok:
            raise _LifespanFailed(message or "lifespan.startup.failed")
        self.used = True

    async def _run(self, scope):
        async def receive():
            return await self.queue.get()

        async def send(message):
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                self.started.set_result((True, ""))
            elif kind == "lifespan.startup.failed":
                self.started.set_result((False, message.get("message", "")))
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if not self.stopped.done():
                    self.stopped.set_result(kind)
                if kind == "lifespan.shutdown.failed":
                    _native.log("error", f"ASGI lifespan shutdown failed: {message.get('message', '')}")

        await self.app(scope, receive, send)

    async def shutdown(self):
        if not self.used:
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait({self.stopped, self.task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
