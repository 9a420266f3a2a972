"""Worker classes, checked by behaviour: how many requests a worker runs at once, the
environ's wsgi.multithread, streaming and errors on pool threads."""

import concurrent.futures
import threading
import time

import pytest
import requests

from apps.obs.obshelpers import ctl
from procs import wait_until
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


def test_gthread_answers_a_quick_request_while_its_other_thread_is_blocked(server):
    # The thread that read the slow request runs it; the worker's sockets must not wait for it
    # (the main thread takes them over), and the quick request gets the other thread.
    srv = server("concurrency_app:app", "-w", "1", "-k", "gthread", "--threads", "2")
    with Conn(srv.port, timeout=30) as slow:
        began = time.monotonic()
        slow.send(request_bytes("GET", "/sleep?3"))
        wait_until(lambda: requests.get(srv.url + "/max", timeout=10).text.split()[0] == "1", 10,
                   "the slow request to start")
        assert requests.get(srv.url + "/sleep?0", timeout=10).text == "first;second"
        assert time.monotonic() - began < 2, "the quick requests waited for the slow one"
        assert slow.read_response().status == 200


def test_gthread_keeps_its_deadlines_and_heartbeat_while_every_thread_is_blocked(server):
    # Both threads sleep past -t 2: the worker's timers (the per-request deadline, the
    # heartbeat) keep running, so each request is answered 504 at its deadline and the master
    # does not kill the worker as stuck.
    srv = server("concurrency_app:app", "-w", "1", "-k", "gthread", "--threads", "2", "-t", "2")
    with Conn(srv.port, timeout=30) as a, Conn(srv.port, timeout=30) as b:
        began = time.monotonic()
        a.send(request_bytes("GET", "/sleep?30"))
        b.send(request_bytes("GET", "/sleep?30"))
        assert (a.read_response().status, b.read_response().status) == (504, 504)
        assert time.monotonic() - began < 10
    srv.wait_log(r"Request timed out after 2\.\ds: GET /sleep\?30 \(answered 504\)", timeout=5)
    assert "WORKER TIMEOUT" not in srv.stderr_text()


def test_unknown_worker_class_names_what_is_available(server):
    srv = server("concurrency_app:app", "-k", "tornado", expect_fail=True)
    assert srv.proc.wait(timeout=10) != 0
    assert "tornado" in srv.stderr_text() and "gthread" in srv.stderr_text()


def test_an_idle_sync_worker_serves_new_connections_while_its_sibling_is_in_a_long_request(server):
    # Worker B runs a 1.5 s request. 8 new keep-alive connections arrive: the idle worker A
    # answers all of them at once, although it then holds more than its share of connections
    # (a busy sync worker cannot serve them; leaving some to B made them wait until its request
    # ended).
    srv = server("concurrency_app:app", "-w", "2")
    with Conn(srv.port, timeout=10) as busy:
        busy.send(request_bytes("GET", "/sleep?1.5"))
        time.sleep(0.3)
        conns = [Conn(srv.port, timeout=10) for _ in range(8)]
        started = time.monotonic()
        pids = []
        for c in conns:
            c.send(request_bytes("GET", "/max"))
            pids.append(c.read_response().body.split()[2])
        waited = time.monotonic() - started
        assert busy.read_response(timeout=10).status == 200
    for c in conns:
        c.close()
    assert waited < 0.8, f"8 quick requests took {waited:.2f} s: some waited for the busy worker"
    assert len(set(pids)) == 1, f"the idle worker should have answered every connection: {pids}"


def start_sync_workers(server, tmp_path, n):
    """``n`` sync workers of concurrency_app, and a function that waits until every one is
    serving and holds no connection (a worker still booting takes none, so the accept rule
    would rightly leave them to the others)."""
    sock = tmp_path / "c.ctl"
    srv = server("concurrency_app:app", "-w", str(n), "--control-socket", str(sock))

    def all_idle_and_empty():
        workers = ctl(sock, "workers", json_out=True).data["workers"]
        return len(workers) == n and all(
            w["state"] == "idle" and w["open_connections"] == 0 for w in workers)

    def wait_all_idle():
        wait_until(all_idle_and_empty, timeout=15, msg=f"{n} idle workers without connections")

    wait_all_idle()
    return srv, wait_all_idle


def test_sync_workers_take_one_new_connection_each_while_a_sibling_holds_none(server, tmp_path):
    # A sync worker serves one request at a time: two connections opened together must not
    # both go to one worker while another holds none (their requests would queue needlessly).
    srv, wait_all_idle = start_sync_workers(server, tmp_path, 3)
    for _ in range(3):
        wait_all_idle()
        conns = [Conn(srv.port, timeout=10) for _ in range(3)]
        try:
            time.sleep(0.2)  # all three accepted before any request
            pids = []
            for c in conns:
                c.send(request_bytes("GET", "/max"))
                pids.append(c.read_response(timeout=10).body.split()[2])
        finally:
            for c in conns:
                c.close()
        assert len(set(pids)) == 3, f"three connections, three idle workers: {pids}"


def test_a_sync_worker_busy_with_slow_requests_leaves_new_connections_to_quick_siblings(server, tmp_path):
    # One keep-alive client sends 0.4 s requests with a pause between them, in which its worker
    # is idle and holds fewer connections than the others. New connections opened meanwhile
    # must go to the two quick workers (which share them), never to the slow one, where their
    # requests would wait behind the slow ones.
    srv, _ = start_sync_workers(server, tmp_path, 3)
    stop = threading.Event()
    slow_done = []

    def slow_client(conn):
        while not stop.is_set():
            conn.send(request_bytes("GET", "/sleep?0.4"))
            assert conn.read_response(timeout=10).status == 200
            slow_done.append(1)
            time.sleep(0.05)

    with Conn(srv.port, timeout=10) as slow:
        thread = threading.Thread(target=slow_client, args=(slow,))
        thread.start()
        try:
            wait_until(lambda: len(slow_done) >= 2, timeout=10, msg="two slow requests")
            fast, pids = [], []
            for _ in range(12):
                conn = Conn(srv.port, timeout=10)
                fast.append(conn)
                conn.send(request_bytes("GET", "/max"))
                pids.append(conn.read_response(timeout=10).body.split()[2])
                time.sleep(0.04)  # spread over the slow worker's idle pauses
        finally:
            stop.set()
            thread.join(timeout=10)
        slow.send(request_bytes("GET", "/max"))
        slow_pid = slow.read_response(timeout=10).body.split()[2]
    for conn in fast:
        conn.close()
    assert slow_pid not in pids, f"a new connection went to the slow worker {slow_pid}: {pids}"
    assert len(set(pids)) == 2, f"the two quick workers should share the connections: {pids}"


def test_post_request_signature_is_read_once_not_per_request(server, tmp_path):
    # Gunicorn adapts post_request to 2, 3 or 4 parameters, read from its signature.
    # inspect.signature per request cost ~20 us (a no-op hook cut sync hello from 90k to 24k
    # RPS); it must be read when the config loads. The hook here counts the reads of its
    # signature and takes 3 parameters, so it also checks the adaptation.
    reads, calls = tmp_path / "reads", tmp_path / "calls"
    (tmp_path / "conf.py").write_text(
        "import inspect\n"
        "class PostRequest:\n"
        "    @property\n"
        "    def __signature__(self):\n"
        f"        with open({str(reads)!r}, 'a') as f:\n"
        "            f.write('x')\n"
        "        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)\n"
        "                  for n in ('worker', 'req', 'environ')]\n"
        "        return inspect.Signature(params)\n"
        "    def __call__(self, worker, req, environ):\n"
        f"        with open({str(calls)!r}, 'a') as f:\n"
        "            f.write(environ['PATH_INFO'] + '\\n')\n"
        "post_request = PostRequest()\n")
    srv = server("concurrency_app:app", "-w", "1", "-c", str(tmp_path / "conf.py"))
    for _ in range(20):
        assert requests.get(srv.url + "/max", timeout=10).status_code == 200
    wait_until(lambda: calls.exists() and len(calls.read_text().splitlines()) == 20, timeout=10,
               msg="20 post_request calls")
    assert calls.read_text().splitlines() == ["/max"] * 20
    assert 0 < len(reads.read_text()) <= 2, f"signature read {len(reads.read_text())} times for 20 requests"


@pytest.mark.parametrize("cls", ["gthread", "gevent"])
def test_post_request_runs_where_the_app_runs_not_on_the_io_thread(server, tmp_path, cls):
    # The hook runs on a pool thread (gthread) or on the hub's thread (gevent), like the app; on
    # the I/O thread (the worker's main thread for gthread, a separate one for gevent) it had to
    # wait for the GIL the app holds.
    (tmp_path / "tid_app.py").write_text(
        "import threading\n"
        "def app(environ, start_response):\n"
        "    body = str(threading.get_native_id()).encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    log = tmp_path / "hook.log"
    (tmp_path / "conf.py").write_text(
        "import threading\n"
        "def post_request(worker, req, environ, resp):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        main = threading.current_thread() is threading.main_thread()\n"
        "        f.write(f'{threading.get_native_id()} {main} {resp.status_code} {req.path}\\n')\n")
    args = ["-k", "gthread", "--threads", "2"] if cls == "gthread" else ["-k", "gevent"]
    srv = server("tid_app:app", "-w", "1", "-c", str(tmp_path / "conf.py"), *args, cwd=tmp_path)
    app_threads = {requests.get(srv.url + "/x", timeout=10).text for _ in range(20)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 20):
        time.sleep(0.05)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 20 and all(rest == ["200", "/x"] for _, _, *rest in lines), lines
    hook_threads = {tid for tid, _, *_ in lines}
    if cls == "gthread":
        # a pool thread (not necessarily the one that ran the request), never the main thread
        assert all(main == "False" for _, main, *_ in lines), lines
    else:
        assert hook_threads == app_threads, f"post_request ran on {hook_threads}, the hub on {app_threads}"
