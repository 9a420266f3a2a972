"""contrib/grafana-dashboard.json stays true to the metrics the server exports: every series a
panel queries is one of docs/metrics.md (which the metrics crate generates from its catalogue
and checks), every metric family has a panel, panel ids are unique and no two panels overlap on
the grid. A metric renamed or added without its panel fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "contrib" / "grafana-dashboard.json").read_text())
METRICS = dict(re.findall(r"^\| `(ferrocorn_[a-z0-9_]+)` \| (\w+) \|", (ROOT / "docs" / "metrics.md").read_text(), re.M))
PANELS = DASHBOARD["panels"]


def queried() -> dict[str, list[str]]:
    """Series name -> titles of the panels that query it."""
    out: dict[str, list[str]] = {}
    for panel in PANELS:
        for target in panel.get("targets", []):
            for name in re.findall(r"ferrocorn_[a-z0-9_]+", target["expr"]):
                out.setdefault(name, []).append(panel["title"])
    return out


def family(series: str) -> str | None:
    """The metric family a queried series belongs to (a histogram's _bucket/_sum/_count)."""
    if series in METRICS:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base) == "histogram":
            return base
    return None


def test_the_metrics_list_was_read():
    assert len(METRICS) >= 30 and METRICS["ferrocorn_requests_total"] == "counter"


def test_every_queried_series_is_exported():
    unknown = {s: titles for s, titles in queried().items() if family(s) is None}
    assert not unknown, f"panels query series the server does not export: {unknown}"


def test_every_metric_family_has_a_panel():
    shown = {family(s) for s in queried()}
    missing = sorted(set(METRICS) - shown)
    assert not missing, f"metrics with no panel in the dashboard: {missing}"


def test_panels_have_unique_ids_and_do_not_overlap():
    ids = [p["id"] for p in PANELS]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for p in PANELS:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (p["title"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = p["title"]


def test_every_query_is_balanced_and_filtered_by_instance():
    for p in PANELS:
        for t in p.get("targets", []):
            expr = t["expr"]
            for open_, close in ("()", "[]", "{}"):
                assert expr.count(open_) == expr.count(close), (p["title"], expr)
            assert 'instance=~"$instance"' in expr, (p["title"], expr)
