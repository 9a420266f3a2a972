"""Worker classes, checked by behaviour: how many requests a worker runs at once, the
environ's wsgi.multithread, streaming and errors on pool threads."""

import concurrent.futures

import requests


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
