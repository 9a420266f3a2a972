"""Smoke test of the bundled demo application."""

import pytest
import requests


@pytest.fixture(scope="module")
def demo(module_server):
    return module_server("ferrocorn.demo:app")


@pytest.mark.parametrize("path", ["/", "/json", "/cpu", "/io"])
def test_demo_routes(demo, path):
    r = requests.get(demo.url + path, timeout=10)
    assert r.status_code == 200, r.text[:200]
    assert r.content


def test_demo_json_is_json(demo):
    r = requests.get(demo.url + "/json", timeout=5)
    assert r.headers["Content-Type"].startswith("application/json")
    assert isinstance(r.json(), (dict, list))


def test_demo_reports_server_software(demo):
    assert requests.get(demo.url + "/json", timeout=5).json()["server"].startswith("ferrocorn/")
