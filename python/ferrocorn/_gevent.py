"""The hub side of ferrocorn's ``gevent`` worker class.

Sockets and HTTP stay in Rust on the worker's I/O thread; this module runs the gevent hub on
the main thread (the worker monkey-patched itself before importing the app) and runs each
request in a greenlet, which calls the WSGI app natively (``job.run``).

Greenlets are reused: a greenlet that finished a request parks and takes the next one. A fresh
greenlet costs CPython a new frame-stack chunk (an mmap, and a munmap with a TLB shoot-down
across the worker's threads when it dies); reuse keeps that off the per-request path. Like a
thread of the sync class, a reused greenlet keeps its greenlet-local state (Gunicorn's gevent
worker also runs all requests of a keep-alive connection in one greenlet); context variables
start empty for every request.

The hub's loop is libev's with one change (``patch``): every short timer it creates also sets
a native ``TimerWake`` (a timerfd the loop watches) to its deadline, so the hub wakes when the
timer is due rather than at the next whole millisecond, where libev's epoll backend rounds up.
"""

import contextvars
import os

import gevent
import gevent.event
from gevent import monkey

from ferrocorn._native import TimerWake

# Parked greenlets kept beyond a burst; the rest end (the Rust side caps concurrency at
# worker_connections, so at most that many exist at once).
MAX_PARKED = 256

# The loop classes whose epoll sleeps are whole milliseconds (libuv's timers are milliseconds
# themselves, so a wake-up between them would not help).
LIBEV_LOOPS = ("gevent.libev.corecext", "gevent.libev.corecffi")


def patch():
    """Monkey-patch as Gunicorn's gevent worker does, with a precise-timer libev loop."""
    base = gevent.config.loop
    # (A hub a preloaded app already made keeps its loop.)
    if base.__module__ in LIBEV_LOOPS:
        gevent.config.loop = precise_timer_loop(base)
    monkey.patch_all()


# Forks this process came out of (os.fork in an app): a child shares its parent's timerfd (one
# open file) and must not set or drain it, so a loop makes its own on its first timer after one.
_forks = 0


def _count_fork():
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


def precise_timer_loop(base):
    """``base`` whose short timers also set a ``TimerWake`` the loop watches."""

    class PreciseTimerLoop(base):
        _timer_wake_watcher = None
        _timer_wake_forks = -1  # (no wake-up yet)

        def timer(self, after, repeat=0.0, ref=True, priority=None):
            if self._timer_wake_forks != _forks:
                self._new_timer_wake()
            if priority is None:  # (gevent's Timeouts pass -1: usually cancelled, never armed)
                self._timer_wake.arm(after)
            return base.timer(self, after, repeat, ref, priority)

        def _new_timer_wake(self):
            if self._timer_wake_watcher is not None:
                self._timer_wake_watcher.stop()
            self._timer_wake = TimerWake()
            self._timer_wake_forks = _forks
            # Not a reference: the wake-up alone must not keep the hub running.
            self._timer_wake_watcher = self.io(self._timer_wake.fileno(), 1, ref=False)
            self._timer_wake_watcher.start(self._timer_wake.fired)

    return PreciseTimerLoop


def serve(bridge, start_io):
    """Run the hub until the I/O thread stops; returns the worker's exit status."""
    hub = gevent.get_hub()
    run_callback = hub.loop.run_callback
    stopped = gevent.event.AsyncResult()
    parked = []

    def runner(job):
        me = gevent.getcurrent()
        while True:
            # A fresh context per request, as a fresh greenlet would have: context variables an
            # app sets do not leak into the next request this greenlet serves.
            contextvars.Context().run(job.run)
            if len(parked) >= MAX_PARKED or stopped.ready():
                return
            parked.append(me)
            # Park: the hub switches back here with the next job (see on_ready).
            job = hub.switch()

    def on_ready():
        for kind, item in bridge.drain():
            if kind == "wsgi":
                if parked:
                    run_callback(parked.pop().switch, item)
                else:
                    gevent.spawn(runner, item)
            elif kind == "wake":
                # A greenlet waiting for room in a full response queue (a gevent Event).
                item.set()
            elif kind == "stop" and not stopped.ready():
                stopped.set(item)

    watcher = hub.loop.io(bridge.fd, 1)
    watcher.start(on_ready)
    start_io()
    stopped.get()
    watcher.stop()
    for greenlet in parked:
        greenlet.kill(block=False)
    return 0
