"""One cache for all workers of a ferrocorn instance.

``from ferrocorn import cache``, then ``cache.get(key)``, ``cache.set(key, value, timeout)`` and
the rest below: every worker reads what any worker wrote, in the instance's shared-memory store
(the same one ``--cache`` keeps responses in, sized by ``--cache-max-size``; least recently used
values make room). Values are any picklable object; exact ints are kept as integers, so
``incr``/``decr`` are atomic across workers. ``timeout`` is in seconds (``None``: until evicted;
``0`` or less: not kept). Keys are ``str`` (UTF-8) or ``bytes``.

With ``--cache-backend redis://…`` (or ``rediss://…``, ``redis+cluster://…``) the values live in
Redis instead, shared by every instance using it (keys ``fc:a:<key>``). Each call then waits for
Redis, with the GIL released, for at most ``--cache-backend-timeout`` (250 ms); when Redis
cannot be reached, calls answer as for a missing key and keep nothing (``get`` returns the
default, ``set`` False, ``incr`` counts from 0 without storing), and a warning is logged at most
every 10 s per worker.

Outside ferrocorn (a unit test, a script) the same calls use a store private to the process and
warn once, so app code stays importable and testable.

The ``a``-prefixed functions (``await cache.aget(key)``) are the same operations for async code;
with the local store they run inline (the store is memory), with Redis in the loop's default
executor, so a slow Redis never stalls the loop's other requests. Under the gevent worker the
plain functions wait for Redis in gevent's thread pool, so other greenlets run meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import pickle
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar, cast

from ferrocorn import _native

__all__ = [
    "add",
    "backend",
    "cached",
    "clear",
    "decr",
    "delete",
    "delete_many",
    "get",
    "get_many",
    "has_key",
    "incr",
    "set",
    "set_many",
    "touch",
    "aadd",
    "aclear",
    "adecr",
    "adelete",
    "adelete_many",
    "aget",
    "aget_many",
    "ahas_key",
    "aincr",
    "aset",
    "aset_many",
    "atouch",
]

F = TypeVar("F", bound=Callable[..., Any])
_MISSING = object()
_INT64 = range(-(2**63), 2**63)
_warned = False

# The longest a computation under ``cached(lock=True)`` holds its key's lock, and so the longest
# other workers wait for it before computing the value themselves.
LOCK_SECONDS = 30.0
_LOCK_POLL = 0.005


def _check_backend() -> None:
    global _warned
    if not _warned and _native.cache_backend() not in ("shared", "redis"):
        _warned = True
        warnings.warn(
            "ferrocorn.cache is not running under a ferrocorn worker: values are kept in this "
            "process only",
            RuntimeWarning,
            stacklevel=3,
        )


def _remote() -> bool:
    return _native.cache_backend() == "redis"


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """A native cache function: inline, except that a greenlet's wait for Redis goes to gevent's
    thread pool (the native call would otherwise hold up every greenlet of the worker)."""
    if _remote() and _gevent_patched():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` inline with the local store, in the loop's executor with Redis."""
    if not _remote():
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def _key(key: str | bytes) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"a cache key is str or bytes, not {type(key).__name__}")


def _dump(value: object) -> bytes | int:
    if type(value) is int and value in _INT64:
        return value
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _load(raw: bytes | int | None) -> object:
    if raw is None:
        return _MISSING
    if isinstance(raw, int):
        return raw
    return pickle.loads(raw)


def backend() -> str:
    """``"redis"`` with a Redis ``--cache-backend`` (one store for every instance using it),
    ``"shared"`` in a ferrocorn worker (one store for every worker), ``"process"`` elsewhere."""
    return _native.cache_backend()


def get(key: str | bytes, default: Any = None) -> Any:
    """The value under ``key``, or ``default``."""
    _check_backend()
    value = _load(_call(_native.cache_get, _key(key)))
    return default if value is _MISSING else value


def set(key: str | bytes, value: Any, timeout: float | None = None) -> bool:  # noqa: A001
    """Keep ``value`` under ``key`` for ``timeout`` seconds. False when it was not kept: larger
    than half the store, or ``timeout <= 0``."""
    _check_backend()
    try:
        return _call(_native.cache_set, _key(key), _dump(value), timeout) and (
            timeout is None or timeout > 0
        )
    except ValueError:
        return False


def add(key: str | bytes, value: Any, timeout: float | None = None) -> bool:
    """Keep ``value`` under ``key`` only if it has no value (atomically, across workers);
    whether it was added."""
    _check_backend()
    try:
        return _call(_native.cache_set, _key(key), _dump(value), timeout, True)
    except ValueError:
        return False


def delete(key: str | bytes) -> bool:
    """Remove ``key``'s value; whether it had one."""
    _check_backend()
    return _call(_native.cache_delete, _key(key))


def incr(key: str | bytes, delta: int = 1) -> int:
    """Add ``delta`` to the integer under ``key`` atomically and return the new value; a missing
    key counts from 0 (as Redis's INCRBY). ValueError when the value is not an integer."""
    _check_backend()
    return _call(_native.cache_incr, _key(key), delta)


def decr(key: str | bytes, delta: int = 1) -> int:
    """``incr(key, -delta)``."""
    return incr(key, -delta)


def touch(key: str | bytes, timeout: float | None = None) -> bool:
    """Give ``key``'s value a new lifetime; whether it had one."""
    _check_backend()
    return _call(_native.cache_touch, _key(key), timeout)


def has_key(key: str | bytes) -> bool:
    """Whether ``key`` has a value."""
    _check_backend()
    return _call(_native.cache_get, _key(key)) is not None


def get_many(keys: Iterable[str | bytes]) -> dict[Any, Any]:
    """The values of those ``keys`` that have one."""
    _check_backend()
    found: dict[Any, Any] = {}
    for key in keys:
        value = _load(_call(_native.cache_get, _key(key)))
        if value is not _MISSING:
            found[key] = value
    return found


def set_many(mapping: Mapping[Any, Any], timeout: float | None = None) -> list[Any]:
    """``set`` each item; the keys that were not kept."""
    return [key for key, value in mapping.items() if not set(key, value, timeout)]


def delete_many(keys: Iterable[str | bytes]) -> None:
    """``delete`` each key."""
    for key in keys:
        delete(key)


def clear() -> None:
    """Remove every value of the app cache (the response cache's entries stay)."""
    _check_backend()
    _call(_native.cache_clear)


async def aget(key: str | bytes, default: Any = None) -> Any:
    return await _off_loop(get, key, default)


async def aset(key: str | bytes, value: Any, timeout: float | None = None) -> bool:
    return await _off_loop(set, key, value, timeout)


async def aadd(key: str | bytes, value: Any, timeout: float | None = None) -> bool:
    return await _off_loop(add, key, value, timeout)


async def adelete(key: str | bytes) -> bool:
    return await _off_loop(delete, key)


async def aincr(key: str | bytes, delta: int = 1) -> int:
    return await _off_loop(incr, key, delta)


async def adecr(key: str | bytes, delta: int = 1) -> int:
    return await _off_loop(decr, key, delta)


async def atouch(key: str | bytes, timeout: float | None = None) -> bool:
    return await _off_loop(touch, key, timeout)


async def ahas_key(key: str | bytes) -> bool:
    return await _off_loop(has_key, key)


async def aget_many(keys: Iterable[str | bytes]) -> dict[Any, Any]:
    return await _off_loop(get_many, keys)


async def aset_many(mapping: Mapping[Any, Any], timeout: float | None = None) -> list[Any]:
    return await _off_loop(set_many, mapping, timeout)


async def adelete_many(keys: Iterable[str | bytes]) -> None:
    await _off_loop(delete_many, keys)


async def aclear() -> None:
    await _off_loop(clear)


def _argument_key(value: object) -> object:
    # A Django request stands for its method and full URL (its repr leaves out the query).
    full_path = getattr(value, "get_full_path", None)
    if callable(full_path) and hasattr(value, "method"):
        return ("request", getattr(value, "method"), full_path())
    return value


def _key_maker(
    func: Callable[..., Any], key: str | Callable[..., str | bytes] | None
) -> Callable[..., str | bytes]:
    name = f"ferrocorn.cached:{func.__module__}.{func.__qualname__}"
    if callable(key):
        return cast(Callable[..., "str | bytes"], key)
    if isinstance(key, str):
        template = key
        return lambda *args, **kwargs: template.format(*args, **kwargs)

    def from_arguments(*args: Any, **kwargs: Any) -> str:
        parts = tuple(_argument_key(a) for a in args)
        named = tuple(sorted((k, _argument_key(v)) for k, v in kwargs.items()))
        return f"{name}:{parts!r}:{named!r}"

    return from_arguments


def cached(
    timeout: float | None = 60, key: str | Callable[..., str | bytes] | None = None, lock: bool = False
) -> Callable[[F], F]:
    """Cache what the decorated function returns, for ``timeout`` seconds, in the store all
    workers share. ``key``: a format string over the arguments (``"user:{0}"``), a function of
    the arguments, or None (the function's name and the repr of its arguments; a Django request
    argument counts as its method and full URL). ``lock=True``: concurrent misses across workers
    compute the value once while the others wait for it. Works on ``async def`` functions too."""

    def decorate(func: F) -> F:
        make_key = _key_maker(func, key)
        if inspect.iscoroutinefunction(func):
            return cast(F, _async_cached(func, make_key, timeout, lock))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache_key = make_key(*args, **kwargs)
            value = get(cache_key, _MISSING)
            if value is not _MISSING:
                return value
            if not lock:
                value = func(*args, **kwargs)
                set(cache_key, value, timeout)
                return value
            return _compute_once(cache_key, lambda: func(*args, **kwargs), timeout)

        return cast(F, wrapper)

    return decorate


# Steps of computing a key once across workers, yielded to a sync or async driver.
_COMPUTE = object()  # compute the value and send it in
_PAUSE = object()  # wait one poll interval


def _once(cache_key: str | bytes, timeout: float | None) -> Generator[object, Any, Any]:
    """``cached(lock=True)`` on a miss: take the key's lock and compute (``_COMPUTE``), or wait
    (``_PAUSE``) while another worker computes and take its value; when the holder fails or
    dies, try the lock again; when it outlives ``LOCK_SECONDS``, compute without it. Returns
    the value."""
    raw_key = _key(cache_key)
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        held = _call(_native.cache_lock, raw_key, LOCK_SECONDS)
        if held is not None:
            try:
                value = get(cache_key, _MISSING)
                if value is _MISSING:
                    value = yield _COMPUTE
                    set(cache_key, value, timeout)
                return value
            finally:
                held.release()
        while _call(_native.cache_filling, raw_key) and time.monotonic() < deadline:
            yield _PAUSE
        value = get(cache_key, _MISSING)
        if value is not _MISSING:
            return value
        if time.monotonic() >= deadline:
            return (yield _COMPUTE)  # the holder outlived the lock: compute without it


def _compute_once(cache_key: str | bytes, compute: Callable[[], Any], timeout: float | None) -> Any:
    """Drive :func:`_once` with ``time.sleep`` and a plain call."""
    steps = _once(cache_key, timeout)
    try:
        step = next(steps)
        while True:
            if step is _PAUSE:
                time.sleep(_LOCK_POLL)
                step = steps.send(None)
                continue
            try:
                value = compute()
            except BaseException as e:  # noqa: BLE001  (released by the generator, re-raised)
                step = steps.throw(e)
            else:
                step = steps.send(value)
    except StopIteration as done:
        return done.value


async def _acompute_once(
    cache_key: str | bytes, compute: Callable[[], Awaitable[Any]], timeout: float | None
) -> Any:
    """Drive :func:`_once` with ``asyncio.sleep`` and an awaited call; its steps (the cache
    calls between them) run off the loop with Redis."""
    steps = _once(cache_key, timeout)

    def advance(how: Callable[..., Any], *arg: Any) -> tuple[bool, Any]:
        # StopIteration cannot cross a Future: it comes back as (True, the value).
        try:
            return False, how(*arg)
        except StopIteration as done:
            return True, done.value

    done, step = await _off_loop(advance, next, steps)
    while not done:
        if step is _PAUSE:
            await asyncio.sleep(_LOCK_POLL)
            done, step = await _off_loop(advance, steps.send, None)
            continue
        try:
            value = await compute()
        except BaseException as e:  # noqa: BLE001  (released by the generator, re-raised)
            done, step = await _off_loop(advance, steps.throw, e)
        else:
            done, step = await _off_loop(advance, steps.send, value)
    return step


def _async_cached(
    func: Callable[..., Awaitable[Any]],
    make_key: Callable[..., str | bytes],
    timeout: float | None,
    lock: bool,
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        cache_key = make_key(*args, **kwargs)
        value = await aget(cache_key, _MISSING)
        if value is not _MISSING:
            return value
        if not lock:
            value = await func(*args, **kwargs)
            await aset(cache_key, value, timeout)
            return value
        return await _acompute_once(cache_key, lambda: func(*args, **kwargs), timeout)

    return wrapper
