"""Real ASGI frameworks under ``-k asgi``: FastAPI, Starlette and Django."""

from __future__ import annotations

import signal
import textwrap

import pytest
import requests

from conftest import APPS_DIR, wait_for_file
from wire import Conn, request_bytes

CLASSES = APPS_DIR / "classes"


# -- FastAPI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_srv(module_server):
    pytest.importorskip("fastapi")
    return module_server("fastapi_app:app", "-k", "asgi", "-w", "1", cwd=CLASSES)


def test_fastapi_json_endpoint(fastapi_srv):
    r = requests.get(fastapi_srv.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"hello": "world"}


def test_fastapi_path_and_query_params(fastapi_srv):
    r = requests.get(fastapi_srv.url + "/items/1", params={"q": "a b"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"id": 1, "name": "hammer", "q": "a b"}
    # path-param validation: not an int -> 422
    assert requests.get(fastapi_srv.url + "/items/abc", timeout=10).status_code == 422


def test_fastapi_post_body_with_a_pydantic_model(fastapi_srv):
    r = requests.post(fastapi_srv.url + "/items", json={"name": "saw", "price": 12.5, "tags": ["t"]}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"received": {"name": "saw", "price": 12.5, "tags": ["t"]}, "total": 25.0}
    bad = requests.post(fastapi_srv.url + "/items", json={"name": "saw"}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "price"]


def test_fastapi_404s(fastapi_srv):
    assert requests.get(fastapi_srv.url + "/items/999", timeout=10).json() == {"detail": "no such item"}
    r = requests.get(fastapi_srv.url + "/nope", timeout=10)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_fastapi_sync_endpoint_in_threadpool(fastapi_srv):
    assert requests.get(fastapi_srv.url + "/sync", timeout=10).json() == {"sync": True}


def test_fastapi_exception_is_500_and_keeps_serving(fastapi_srv):
    r = requests.get(fastapi_srv.url + "/boom", timeout=10)
    assert r.status_code == 500
    assert "fastapi boom" not in r.text
    assert requests.get(fastapi_srv.url + "/", timeout=10).status_code == 200
    fastapi_srv.wait_log(r"RuntimeError: fastapi boom")


# -- Starlette ----------------------------------------------------------------------------------


def test_starlette_routes_streaming_and_lifespan_state(server, state_dir):
    pytest.importorskip("starlette")
    srv = server("starlette_app:app", "-k", "asgi", "-w", "1", "-e", f"STATE_DIR={state_dir}", cwd=CLASSES)
    assert wait_for_file(state_dir / "events") == "startup\n"
    r = requests.get(srv.url + "/", timeout=10)
    assert (r.status_code, r.text) == (200, "starlette home")
    r = requests.get(srv.url + "/users/ada", timeout=10)
    assert r.json() == {"user": "ada", "greeting": "hello from lifespan"}
    r = requests.post(srv.url + "/echo", json={"k": [1, 2, 3]}, timeout=10)
    assert r.json() == {"echo": {"k": [1, 2, 3]}, "length": len(b'{"k": [1, 2, 3]}')}
    assert requests.get(srv.url + "/missing", timeout=10).status_code == 404

    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("GET", "/stream"))
        resp = c.read_response()
    assert resp.status == 200
    assert resp.framing == "chunked"
    assert resp.body == b"".join(f"part {i}\n".encode() for i in range(5))

    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15) == 0
    assert (state_dir / "events").read_text() == "startup\nshutdown\n"


# -- Django -------------------------------------------------------------------------------------

DJANGO_SETTINGS = """
SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "dj_urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
"""

DJANGO_URLS = """
from django.http import JsonResponse
from django.urls import path


def hello(request, name):
    return JsonResponse({"hello": name, "method": request.method, "q": request.GET.get("q"),
                         "script_name": request.META.get("SCRIPT_NAME")})


async def async_view(request):
    return JsonResponse({"async": True, "body": request.body.decode()})


def boom(request):
    raise RuntimeError("django boom")


urlpatterns = [path("hello/<str:name>/", hello), path("async/", async_view), path("boom/", boom)]
"""

DJANGO_ASGI = """
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dj_settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
"""


@pytest.fixture
def django_dir(tmp_path):
    pytest.importorskip("django")
    d = tmp_path / "djproj"
    d.mkdir()
    (d / "dj_settings.py").write_text(textwrap.dedent(DJANGO_SETTINGS))
    (d / "dj_urls.py").write_text(textwrap.dedent(DJANGO_URLS))
    (d / "dj_asgi.py").write_text(textwrap.dedent(DJANGO_ASGI))
    return d


def test_django_asgi_application(server, django_dir):
    # Django's handler rejects the lifespan scope: --asgi-lifespan auto must go on serving
    srv = server("dj_asgi:application", "-k", "asgi", "-w", "1", cwd=django_dir)
    r = requests.get(srv.url + "/hello/world/", params={"q": "x"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"hello": "world", "method": "GET", "q": "x", "script_name": ""}
    r = requests.post(srv.url + "/async/", data=b"payload", timeout=10)
    assert r.json() == {"async": True, "body": "payload"}
    assert requests.get(srv.url + "/missing/", timeout=10).status_code == 404
    r = requests.get(srv.url + "/boom/", timeout=10)
    assert r.status_code == 500
    assert requests.get(srv.url + "/hello/again/", timeout=10).json()["hello"] == "again"


def test_django_root_path_becomes_script_name(server, django_dir):
    srv = server("dj_asgi:application", "-k", "asgi", "--root-path", "/mount", cwd=django_dir)
    r = requests.get(srv.url + "/mount/hello/x/", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["script_name"] == "/mount"
