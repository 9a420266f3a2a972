"""A cachelib cache over ferrocorn's shared app cache (``ferrocorn.cache``), which Flask-Caching
can create::

    cache = Cache(app, config={
        "CACHE_TYPE": "ferrocorn.contrib.flask_caching.FerrocornCache",
        "CACHE_DEFAULT_TIMEOUT": 300,   # optional
        "CACHE_KEY_PREFIX": "myapp_",   # optional (Flask-Caching's default: "flask_cache_")
    })

or, without Flask-Caching's extension, ``FerrocornCache(default_timeout=300, key_prefix="")``
wherever a ``cachelib.BaseCache`` is expected (e.g. Flask-Session's ``SESSION_CACHELIB``).

Every worker of a ferrocorn instance reads what any worker wrote: the values live in the
instance's shared-memory store (sized by ``--cache-max-size``; least recently used values make
room). cachelib's conventions hold: a timeout of None means ``default_timeout``, 0 means no
expiry (until evicted), a negative one keeps nothing; ``get`` answers None for a missing key.
Expiry counts whole seconds: a value set for ``t`` seconds lives between ``t`` and ``t + 1``.

Values are pickled, except exact integers (within 64 bits), which the store keeps as integers:
``inc``/``dec`` are atomic across workers (a missing key counts from 0) and raise ``TypeError``
when the value is not such an integer.

``clear()`` removes the values under this cache's key prefix only (with an empty prefix, every
cachelib value); ``ferrocorn.contrib.django``, ``ferrocorn.cache`` values and the response
cache's entries stay.

Outside ferrocorn (``flask shell``, unit tests) the cache works on a store private to the
process, with the one-time ``RuntimeWarning`` of ``ferrocorn.cache``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from flask_caching.backends.base import BaseCache

from ferrocorn import _native
from ferrocorn import cache as _cache

__all__ = ["FerrocornCache"]


class FerrocornCache(BaseCache):
    """cachelib's cache API over the store all workers of a ferrocorn instance share."""

    def __init__(
        self,
        default_timeout: int = 300,
        key_prefix: str = "",
        ignore_delete_many_errors: bool = False,
    ) -> None:
        BaseCache.__init__(
            self,
            default_timeout=default_timeout,
            ignore_delete_many_errors=ignore_delete_many_errors,
        )
        self.key_prefix = key_prefix

    @classmethod
    def factory(
        cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> FerrocornCache:
        """Flask-Caching's constructor: ``kwargs`` holds ``default_timeout``,
        ``ignore_delete_many_errors`` and ``CACHE_OPTIONS``; ``CACHE_KEY_PREFIX`` is the key
        prefix."""
        kwargs.setdefault("key_prefix", config.get("CACHE_KEY_PREFIX") or "")
        return cls(*args, **kwargs)

    # -- helpers --------------------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        _cache._check_backend()
        return b"cachelib\0" + (self.key_prefix + key).encode()

    def _ttl(self, timeout: int | dt.timedelta | None) -> float | None:
        """The store's lifetime for a cachelib timeout (None: default; 0: no expiry)."""
        seconds = self._normalize_timeout(timeout)
        return None if seconds == 0 else float(seconds)

    # -- cachelib's cache API -------------------------------------------------------------------

    def get(self, key: str) -> Any:
        raw = _native.cache_get(self._key(key))
        return None if raw is None else _cache._load(raw)

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Whether the value was stored: False when the store refuses one this large (then no
        older value is left behind)."""
        raw = self._key(key)
        data = _cache._dump(value)  # pickling errors propagate, as cachelib documents
        try:
            return _native.cache_set(raw, data, self._ttl(timeout))
        except ValueError:
            _native.cache_delete(raw)
            return False

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        data = _cache._dump(value)
        try:
            return _native.cache_set(self._key(key), data, self._ttl(timeout), True)
        except ValueError:
            return False

    def delete(self, key: str) -> bool:
        return _native.cache_delete(self._key(key))

    def has(self, key: str) -> bool:
        return _native.cache_get(self._key(key)) is not None

    def clear(self) -> bool:
        """Remove the values under this cache's key prefix (every worker's view of them)."""
        _cache._check_backend()
        _native.cache_clear(b"cachelib\0" + self.key_prefix.encode())
        return True

    def inc(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` atomically (across workers); a missing key counts from 0."""
        try:
            return _native.cache_incr(self._key(key), delta)
        except ValueError as e:
            raise TypeError(f"the value of key {key!r} is not an integer") from e

    def dec(self, key: str, delta: int = 1) -> int:
        return self.inc(key, -delta)

    # get_many, get_dict, set_many (the keys stored) and delete_many (the keys deleted) are
    # cachelib's, over the methods above.
