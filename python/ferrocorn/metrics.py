"""App-defined Prometheus metrics aggregated over all ferrocorn workers.

``Counter``, ``Gauge`` and ``Histogram`` take ``(name, documentation, labelnames=())`` like
prometheus_client's; every worker updates the same series in shared memory and the server's
``--metrics-bind`` endpoint shows their sum. Implemented in the native module.
"""

from ferrocorn._native import Counter, Gauge, Histogram

__all__ = ["Counter", "Gauge", "Histogram"]
