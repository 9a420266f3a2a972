"""A Django app (settings configured here, no settings module) whose cache is
``ferrocorn.contrib.django.FerrocornCache``, for tests/test_cache_frameworks.py: each request runs
one Django cache operation in whichever worker serves it and answers JSON
``{"result": ..., "pid": ...}``, so a test sees one worker read what another wrote.

``/<op>`` with query parameters ``k`` key, ``v`` value (JSON), ``t`` timeout seconds (absent:
the alias's default), ``d`` delta, ``alias`` (``default``, or ``other``: a second alias with
another LOCATION), ``hold=S`` (busy-wait S seconds first, so concurrent requests spread over
the workers). Ops: get (``"<missing>"`` for a missing key), set, add, delete, incr, decr, touch,
has_key, get_many (``k=a,b``), set_many (``v`` a JSON object), clear, backend (``ferrocorn.cache``
's backend and the alias's class). A ValueError answers 409, a TypeError 422.
"""

from __future__ import annotations

import json
import os
import time

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="ferrocorn-tests",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    CACHES={
        "default": {"BACKEND": "ferrocorn.contrib.django.FerrocornCache", "LOCATION": "default"},
        "other": {"BACKEND": "ferrocorn.contrib.django.FerrocornCache", "LOCATION": "other"},
    },
)
django.setup()

from django.core.cache import caches  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from ferrocorn import cache as ferrocorn_cache  # noqa: E402

MISSING = "<missing>"


def _hold(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _run(op: str, q: dict[str, str]) -> object:
    c = caches[q.get("alias", "default")]
    k = q.get("k", "")
    kw = {"timeout": float(q["t"])} if "t" in q else {}
    if op == "get":
        return c.get(k, MISSING)
    if op == "set":
        c.set(k, json.loads(q["v"]), **kw)
        return True
    if op == "add":
        return c.add(k, json.loads(q["v"]), **kw)
    if op == "delete":
        return c.delete(k)
    if op == "incr":
        return c.incr(k, int(q.get("d", "1")))
    if op == "decr":
        return c.decr(k, int(q.get("d", "1")))
    if op == "touch":
        return c.touch(k, **kw)
    if op == "has_key":
        return c.has_key(k)
    if op == "get_many":
        return c.get_many(k.split(","))
    if op == "set_many":
        return c.set_many(json.loads(q["v"]), **kw)
    if op == "clear":
        c.clear()
        return True
    if op == "backend":
        return [ferrocorn_cache.backend(), f"{type(c).__module__}.{type(c).__name__}"]
    raise LookupError(op)


def view(request: HttpRequest, op: str) -> JsonResponse:
    q = request.GET.dict()
    _hold(float(q.get("hold", "0")))
    try:
        result = _run(op, q)
    except LookupError:
        return JsonResponse({"error": "no such op", "pid": os.getpid()}, status=404)
    except ValueError as e:
        return JsonResponse({"error": f"ValueError: {e}", "pid": os.getpid()}, status=409)
    except TypeError as e:
        return JsonResponse({"error": f"TypeError: {e}", "pid": os.getpid()}, status=422)
    return JsonResponse({"result": result, "pid": os.getpid()})


urlpatterns = [path("<str:op>", view)]

app = WSGIHandler()
