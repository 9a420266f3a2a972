"""A real Flask application served by ferrocorn, driven by requests and httpx."""

import hashlib
import os

import httpx
import pytest
import requests


@pytest.fixture(scope="module")
def flask_srv(module_server):
    return module_server("flask_app:app")


def test_index(flask_srv):
    r = requests.get(flask_srv.url + "/", timeout=5)
    assert r.status_code == 200 and r.text == "flask index"
    assert r.headers["Content-Type"].startswith("text/html")


def test_json_get_and_post(flask_srv):
    r = requests.get(flask_srv.url + "/json", params={"a": "1", "b": "é"}, timeout=5)
    assert r.json() == {"hello": "world", "args": {"a": "1", "b": "é"}}
    r = httpx.post(flask_srv.url + "/json", json={"x": [1, 2, 3], "s": "ünï"}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"received": {"x": [1, 2, 3], "s": "ünï"}, "method": "POST"}


def test_form_post(flask_srv):
    r = requests.post(flask_srv.url + "/form", data={"name": "Ada", "tags": ["a", "b"]}, timeout=5)
    assert r.json() == {"form": {"name": ["Ada"], "tags": ["a", "b"]}}


def test_multipart_upload(flask_srv):
    data = os.urandom(300 * 1024)
    r = requests.post(
        flask_srv.url + "/upload",
        files={"file": ("blob.bin", data, "application/octet-stream")},
        data={"note": "hi there"},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.json() == {
        "filename": "blob.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "field": "hi there",
    }


def test_streaming_with_context(flask_srv):
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", flask_srv.url + "/stream", params={"n": "6", "who": "bob"}) as r:
            assert r.status_code == 200
            assert r.headers.get("transfer-encoding") == "chunked"
            lines = [line for line in r.iter_lines() if line]
    assert lines == [f"bob:{i}" for i in range(6)]


def test_cookies_set_and_read(flask_srv):
    with requests.Session() as s:
        r = s.get(flask_srv.url + "/cookie/set", timeout=5)
        assert r.status_code == 200
        assert len(r.raw.headers.getlist("Set-Cookie")) == 2
        assert s.cookies.get("flavour") == "oatmeal"
        r = s.get(flask_srv.url + "/cookie/get", timeout=5)
    assert r.json()["cookies"] == {"flavour": "oatmeal", "session_id": "abc123"}


def test_404_and_redirect(flask_srv):
    assert requests.get(flask_srv.url + "/missing", timeout=5).status_code == 404
    assert requests.get(flask_srv.url + "/no-such-route", timeout=5).status_code == 404
    r = requests.get(flask_srv.url + "/redirect", allow_redirects=False, timeout=5)
    assert r.status_code == 302
    assert r.headers["Location"].endswith("/")
    assert requests.get(flask_srv.url + "/redirect", timeout=5).text == "flask index"


def test_request_url_reconstruction(flask_srv):
    r = requests.get(flask_srv.url + "/url?x=1", timeout=5)
    info = r.json()
    assert info["url"] == f"http://127.0.0.1:{flask_srv.port}/url?x=1"
    assert info["path"] == "/url" and info["script_root"] == ""


def test_script_name_prefix_with_flask(server):
    srv = server("flask_app:app", "-e", "SCRIPT_NAME=/mount")
    info = requests.get(srv.url + "/mount/url", timeout=5).json()
    assert info["script_root"] == "/mount" and info["path"] == "/url"
    assert info["url"] == f"http://127.0.0.1:{srv.port}/mount/url"


def test_concurrent_clients(flask_srv):
    from concurrent.futures import ThreadPoolExecutor

    def fetch(i):
        return requests.get(flask_srv.url + "/json", params={"i": str(i)}, timeout=10).json()["args"]["i"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(40)))
    assert results == [str(i) for i in range(40)]
