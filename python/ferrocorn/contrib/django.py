"""A Django cache backend over ferrocorn's shared app cache (``ferrocorn.cache``)::

    CACHES = {
        "default": {
            "BACKEND": "ferrocorn.contrib.django.FerrocornCache",
            "LOCATION": "default",  # optional: a namespace, so two aliases never collide
            "TIMEOUT": 300,         # Django's default; None keeps values until evicted
        }
    }

Every worker of a ferrocorn instance reads what any worker wrote: the values live in the
instance's shared-memory store (sized by ``--cache-max-size``; least recently used values make
room, so ``OPTIONS`` ``MAX_ENTRIES``/``CULL_FREQUENCY`` are ignored). ``KEY_PREFIX``,
``VERSION`` and ``KEY_FUNCTION`` work as in Django's own backends, and keys are checked with
``validate_key`` (a ``CacheKeyWarning`` for keys memcached would refuse). Aliases with different
``LOCATION`` values never see each other's keys; aliases with the same (or no) ``LOCATION``
share them, as with Django's locmem backend.

Values are pickled, except exact integers (within 64 bits), which the store keeps as integers:
``incr``/``decr`` are atomic across workers. They raise ``ValueError`` for a missing key (as
Django requires) and ``TypeError`` when the value is not such an integer (a float, a string;
Django's locmem would add to a float). Expiry counts whole seconds: a value set for ``t``
seconds lives between ``t`` and ``t + 1`` seconds.

``clear()`` removes this alias's values only (its ``LOCATION``'s namespace); other aliases,
``ferrocorn.contrib.flask_caching``, ``ferrocorn.cache`` values and the response cache's entries
stay.

Outside ferrocorn (``manage.py`` commands, unit tests) the backend works on a store private to
the process, with the one-time ``RuntimeWarning`` of ``ferrocorn.cache``. The ``a``-prefixed
methods run the same operations directly (the store is memory: nothing to wait for).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

# Django ships no type information (django-stubs adds it: hence unused-ignore).
from django.core.cache.backends.base import (  # type: ignore[import-untyped,unused-ignore]
    DEFAULT_TIMEOUT,
    BaseCache,
)
from django.core.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ImproperlyConfigured,
)

from ferrocorn import _native
from ferrocorn import cache as _cache

__all__ = ["FerrocornCache"]


class FerrocornCache(BaseCache):  # type: ignore[misc,unused-ignore]  # Any without django-stubs
    """Django's cache API over the store all workers of a ferrocorn instance share."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        if "\0" in location:
            raise ImproperlyConfigured("a ferrocorn cache LOCATION cannot contain NUL")
        # NUL never occurs in LOCATION, so (LOCATION, key) pairs map to distinct store keys.
        self._namespace = f"django\0{location}\0".encode()

    # -- helpers --------------------------------------------------------------------------------

    def _key(self, key: str, version: int | None) -> bytes:
        _cache._check_backend()
        made: str = self.make_and_validate_key(key, version=version)
        return self._namespace + made.encode()

    def _ttl(self, timeout: float | None) -> float | None:
        """The store's lifetime (seconds from now, None: until evicted; <= 0: not kept) for a
        Django timeout, through ``get_backend_timeout`` (an absolute time, None for ever)."""
        expires = self.get_backend_timeout(timeout)
        return None if expires is None else float(expires) - time.time()

    @staticmethod
    def _put(key: bytes, value: Any, ttl: float | None) -> bool:
        """Store ``value``; False when the store refuses one this large (then no older value is
        left behind, as memcached does)."""
        data = _cache._dump(value)  # pickling errors propagate, as Django requires
        try:
            return _native.cache_set(key, data, ttl)
        except ValueError:
            _native.cache_delete(key)
            return False

    # -- Django's cache API ---------------------------------------------------------------------

    def add(
        self,
        key: str,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        raw = self._key(key, version)
        ttl = self._ttl(timeout)
        data = _cache._dump(value)
        if ttl is not None and ttl <= 0:
            # Django: adding with a zero timeout succeeds when the key is absent, keeping nothing.
            return _native.cache_get(raw) is None
        try:
            return _native.cache_set(raw, data, ttl, True)
        except ValueError:
            return False

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        raw = _native.cache_get(self._key(key, version))
        return default if raw is None else _cache._load(raw)

    def set(
        self,
        key: str,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> None:
        self._put(self._key(key, version), value, self._ttl(timeout))

    def touch(
        self, key: str, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        return _native.cache_touch(self._key(key, version), self._ttl(timeout))

    def delete(self, key: str, version: int | None = None) -> bool:
        return _native.cache_delete(self._key(key, version))

    def has_key(self, key: str, version: int | None = None) -> bool:
        return _native.cache_get(self._key(key, version)) is not None

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` atomically (across workers); ValueError for a missing key, TypeError
        when the value is not an integer."""
        raw = self._key(key, version)
        try:
            return _native.cache_incr(raw, delta, True)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None
        except ValueError as e:
            raise TypeError(f"the value of key '{key}' is not an integer") from e

    def decr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version)

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key in keys:
            raw = _native.cache_get(self._key(key, version))
            if raw is not None:
                found[key] = _cache._load(raw)
        return found

    def set_many(
        self,
        data: Mapping[str, Any],
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[str]:
        """``set`` each item; the keys whose value the store refused (too large)."""
        ttl = self._ttl(timeout)
        return [k for k, v in data.items() if not self._put(self._key(k, version), v, ttl)]

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        for key in keys:
            _native.cache_delete(self._key(key, version))

    def clear(self) -> None:
        """Remove this alias's values (every worker's view of them)."""
        _cache._check_backend()
        _native.cache_clear(self._namespace)

    def close(self, **kwargs: Any) -> None:
        """Nothing to close: the store is memory the worker keeps mapped."""

    # -- the async API: the same operations, run directly ---------------------------------------

    async def aadd(
        self,
        key: str,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        return self.add(key, value, timeout, version)

    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        return self.get(key, default, version)

    async def aset(
        self,
        key: str,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> None:
        self.set(key, value, timeout, version)

    async def atouch(
        self, key: str, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        return self.touch(key, timeout, version)

    async def adelete(self, key: str, version: int | None = None) -> bool:
        return self.delete(key, version)

    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        return self.has_key(key, version)

    async def aincr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, delta, version)

    async def adecr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version)

    async def aget_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        return self.get_many(keys, version)

    async def aset_many(
        self,
        data: Mapping[str, Any],
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[str]:
        return self.set_many(data, timeout, version)

    async def adelete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        self.delete_many(keys, version)

    async def aclear(self) -> None:
        self.clear()

    async def aclose(self, **kwargs: Any) -> None:
        self.close(**kwargs)
