"""The hub side of ferrocorn's ``gevent`` worker class.

Sockets and HTTP stay in Rust on the worker's I/O thread; this module runs the gevent hub on
the main thread (the worker monkey-patched itself before importing the app) and spawns one
greenlet per request, which runs the WSGI app natively (``job.run``).
"""

import gevent
import gevent.event


def serve(bridge, start_io):
    """Run the hub until the I/O thread stops; returns the worker's exit status."""
    stopped = gevent.event.AsyncResult()

    def on_ready():
        for kind, item in bridge.drain():
            if kind == "wsgi":
                gevent.spawn(item.run)
            elif kind == "stop" and not stopped.ready():
                stopped.set(item)

    watcher = gevent.get_hub().loop.io(bridge.fd, 1)
    watcher.start(on_ready)
    start_io()
    stopped.get()
    watcher.stop()
    return 0
