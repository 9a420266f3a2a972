"""A real Prometheus server scrapes ferrocorn's metrics endpoint (loopback only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from apps.obs.obshelpers import free_port, get, start, wait_workers

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)


def _query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=3) as r:
        data = json.load(r)
    assert data.get("status") == "success", data
    return data["data"]["result"]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (apt-get install prometheus)")
def test_real_prometheus_scrapes_request_count(server, tmp_path):
    srv = start(server, workers=2)
    wait_workers(srv, 2)
    n = 23
    for i in range(n):
        assert get(srv.port, "/missing" if i % 4 == 0 else "/")[0] in (200, 404)

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ferrocorn\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{srv.metrics_addr}']\n"
    )
    web_port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 30
        last = None
        while time.monotonic() < deadline:
            if prom.poll() is not None:
                break
            try:
                result = _query(base, "sum(ferrocorn_requests_total)")
                if result:
                    last = float(result[0]["value"][1])
                    if last == n:
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        log.flush()
        logtext = (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
        assert prom.poll() is None, f"prometheus exited with {prom.returncode}:\n{logtext}"
        assert last == n, f"sum(ferrocorn_requests_total) = {last}, expected {n}; prometheus log:\n{logtext}"
        up = _query(base, 'up{job="ferrocorn"}')
        assert up and up[0]["value"][1] == "1", up
        # the per-code series survived the round trip through Prometheus too
        r404 = _query(base, 'sum(ferrocorn_requests_total{code="404"})')
        assert r404 and float(r404[0]["value"][1]) == len(range(0, n, 4))
    finally:
        if prom.poll() is None:
            os.kill(prom.pid, signal.SIGTERM)
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(prom.pid, signal.SIGKILL)
                prom.wait(5)
        log.close()
