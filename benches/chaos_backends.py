#!/usr/bin/env python3
"""Chaos under continuous load, for what ferrocorn talks to: the cache's Redis, killed and
restarted, and an upstream of ``ferrocorn balance``, killed and restarted.

Usage (from the repository root)::

    python benches/chaos_backends.py --scenario redis|upstream [--duration 30] [--every 3]
        [--down SECONDS] [--out FILE.md] [--keep-logs]

Every ``--every`` seconds the backend goes away and is started again on the same port
``--down`` seconds later, while ``ferrocorn bench`` clients keep requesting; afterwards the
answers, the logs, the descriptors and the processes are checked. Each scenario is a module of
its own, whose docstring says what it runs and checks:

* ``--scenario redis`` (``chaos_redis.py``): the ``redis-server`` of ``--cache
  --cache-backend redis://…``, SIGKILLed or shut down (``SHUTDOWN NOSAVE``) in turn;
* ``--scenario upstream`` (``chaos_upstream.py``): one of three upstreams behind ``ferrocorn
  balance``, its process group SIGKILLed, in turn; the balancer's sockets are read from /proc
  by ``sockets_of.py``.

The report is printed (and appended to ``--out``) in the style of RELIABILITY.md's chaos
sections; the exit status is 1 when a check failed. Bounded: ``--duration`` seconds of load
plus start-up, the waits and checks around the load (up to 12 s before it, about 25 s after)
and stops of at most 20 s each. Every process is stopped by its PID (a killed upstream by its
process group, which is its own session). Standard library only; Linux only (/proc).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benches/compare.py: emit, log)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", required=True, choices=["redis", "upstream"])
    ap.add_argument("--duration", type=int, default=30, help="seconds of load (30)")
    ap.add_argument("--every", type=float, default=3.0, help="seconds between events (3)")
    ap.add_argument("--down", type=float,
                    help="seconds the killed backend stays down (redis 1, upstream 2)")
    ap.add_argument("--out", help="append the markdown report to this file")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    if args.down is not None and args.down >= args.every:
        ap.error("--down must be shorter than --every")
    if args.scenario == "redis":
        import chaos_redis as scenario
    else:
        import chaos_upstream as scenario
    report, failures = [], []
    scenario.run(args, report, failures)
    if report:
        compare.emit("\n".join(report), args.out)
    else:
        compare.log("no report: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
