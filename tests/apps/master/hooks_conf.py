"""Config file recording every server hook as a JSON line in $HOOK_LOG.

Each line: {"hook": name, "pid": os.getpid(), ...details}. HOOK_FAIL=<hookname> makes that
hook raise (to test boot failures).
"""

import json
import os

_LOG = os.environ.get("HOOK_LOG")
_FAIL = os.environ.get("HOOK_FAIL", "")


def _rec(hook, **kw):
    kw = {"hook": hook, "pid": os.getpid(), **kw}
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(kw, default=repr) + "\n")
            f.flush()
    if _FAIL == hook:
        raise RuntimeError(f"hook {hook} fails on purpose")


def _srv(server):
    d = {}
    for attr in ("pid", "num_workers"):
        try:
            d["server_" + attr] = getattr(server, attr)
        except Exception as e:  # noqa: BLE001
            d["server_" + attr] = "ERR " + repr(e)
    try:
        d["cfg_workers"] = server.cfg.workers
    except Exception as e:  # noqa: BLE001
        d["cfg_workers"] = "ERR " + repr(e)
    return d


def _wrk(worker):
    d = {}
    for attr in ("pid", "age", "alive"):
        try:
            d["worker_" + attr] = getattr(worker, attr)
        except Exception as e:  # noqa: BLE001
            d["worker_" + attr] = "ERR " + repr(e)
    d["worker_has_log"] = hasattr(worker, "log")
    return d


def on_starting(server):
    _rec("on_starting", **_srv(server))
    server.log.info("hook-log-check %s", 42)


def when_ready(server):
    _rec("when_ready", **_srv(server))


def pre_fork(server, worker):
    _rec("pre_fork", **_srv(server), **_wrk(worker))


def post_fork(server, worker):
    _rec("post_fork", **_srv(server), **_wrk(worker))


def post_worker_init(worker):
    _rec("post_worker_init", **_wrk(worker))
    try:
        worker.log.info("worker-log-check %s", os.getpid())
    except Exception:  # noqa: BLE001
        pass


def pre_request(worker, req):
    _rec(
        "pre_request",
        method=req.method,
        path=req.path,
        headers=[list(h) for h in req.headers],
        **_wrk(worker),
    )


def post_request(worker, req, environ, resp):
    _rec(
        "post_request",
        method=req.method,
        path=req.path,
        path_info=environ.get("PATH_INFO") if isinstance(environ, dict) else repr(type(environ)),
        environ_is_dict=isinstance(environ, dict),
        status=getattr(resp, "status", None),
    )


def worker_exit(server, worker):
    _rec("worker_exit", **_wrk(worker))


def child_exit(server, worker):
    _rec("child_exit", **_srv(server), **_wrk(worker))


def nworkers_changed(server, new_value, old_value):
    _rec("nworkers_changed", new=new_value, old=old_value)


def on_reload(server):
    _rec("on_reload", **_srv(server))


def worker_int(worker):
    _rec("worker_int", **_wrk(worker))


def worker_abort(worker):
    _rec("worker_abort", **_wrk(worker))


def pre_exec(server):
    _rec("pre_exec", **_srv(server))


def on_exit(server):
    _rec("on_exit", **_srv(server))
