"""Worker classes, checked by behaviour: how many requests a worker runs at once, the
environ's wsgi.multithread, streaming and errors on pool threads."""

import collections
import concurrent.futures
import time

import requests

from wire import Conn, request_bytes


def _hammer(url, clients):
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(requests.get, url, timeout=30) for _ in range(clients)]
        return [f.result() for f in futures]


def test_gthread_runs_exactly_threads_requests_at_once(server):
    srv = server("concurrency_app:app", "-w", "1", "-k", "gthread", "--threads", "8")
    responses = _hammer(srv.url + "/sleep", 16)
    assert all(r.status_code == 200 and r.text == "first;second" for r in responses)
    max_seen, multithread, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert (int(max_seen), multithread) == (8, "True")


def test_sync_with_threads_means_gthread(server):
    srv = server("concurrency_app:app", "-w", "1", "--threads", "3")
    _hammer(srv.url + "/sleep", 6)
    max_seen, multithread, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert (int(max_seen), multithread) == (3, "True")
    assert "Using worker: gthread" in srv.stderr_text()


def test_sync_runs_exactly_one_request_at_once(server):
    srv = server("concurrency_app:app", "-w", "1")
    _hammer(srv.url + "/sleep?0.1", 4)
    max_seen, multithread, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert (int(max_seen), multithread) == (1, "False")


def test_gthread_exception_is_500_and_the_worker_keeps_serving(server):
    srv = server("concurrency_app:app", "-w", "1", "-k", "gthread", "--threads", "2")
    r = requests.get(srv.url + "/boom", timeout=10)
    assert r.status_code == 500
    assert "boom in a pool thread" not in r.text
    assert requests.get(srv.url + "/sleep?0", timeout=10).text == "first;second"
    assert "RuntimeError: boom in a pool thread" in srv.stderr_text()


def test_unknown_worker_class_names_what_is_available(server):
    srv = server("concurrency_app:app", "-k", "tornado", expect_fail=True)
    assert srv.proc.wait(timeout=10) != 0
    assert "tornado" in srv.stderr_text() and "gthread" in srv.stderr_text()


def test_sync_workers_even_out_keep_alive_connections(server):
    # While worker B runs a slow request, 8 keep-alive connections open. A busy sync worker
    # serves nothing, so the idle worker A takes and answers all 8 at once (it must not leave
    # some of them to wait for B because it holds more than its share). Afterwards A holds 8 of
    # 9 connections and its clients would queue behind each other for as long as they stay
    # connected: a worker holding more than its share answers with Connection: close, the
    # clients reconnect, and the connections end up 4/4.
    srv = server("concurrency_app:app", "-w", "2")
    conns = []

    def ask(i):
        """GET /max on connection i; reconnects it when the answer closes it. Returns (pid, shed)."""
        conns[i].send(request_bytes("GET", "/max"))
        resp = conns[i].read_response()
        shed = (resp.header("connection") or "").lower() == "close"
        if shed:
            conns[i].close()
            conns[i] = Conn(srv.port, timeout=10)
        return resp.body.split()[2], shed

    with Conn(srv.port, timeout=10) as busy:
        busy.send(request_bytes("GET", "/sleep?1.5"))
        time.sleep(0.3)
        conns += [Conn(srv.port, timeout=10) for _ in range(8)]
        started = time.monotonic()
        first = [ask(i)[0] for i in range(8)]
        waited = time.monotonic() - started
        assert waited < 0.8, f"8 requests took {waited:.2f} s: some waited for the busy worker"
        assert len(set(first)) == 1, f"the idle worker should have answered every connection: {first}"
        assert busy.read_response(timeout=10).status == 200
    pids = []
    for _ in range(30):
        answers = [ask(i) for i in range(8)]
        pids = [pid for pid, _ in answers]
        if not any(shed for _, shed in answers):
            break
    for c in conns:
        c.close()
    counts = sorted(collections.Counter(pids).values())
    assert counts == [4, 4], f"connections per worker after balancing: {collections.Counter(pids)}"
