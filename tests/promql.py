"""The metric names the dashboard and the alert rules query, for checking them against a live /metrics."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "kite-kafka.json"
RULES = ROOT / "deploy" / "prometheus" / "rules"

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}  # fmt: skip
# what Prometheus itself provides: the scrape health series and the rules' own recorded series
PROMETHEUS_OWN = re.compile(r"^(up|kite:.*)$")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: not functions, keywords, label names, strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"(?<![\w:])\d[\d.]*(e[+-]?\d+)?[smhdwy]*", " ", expr)  # numbers, offsets' durations
    return {
        m.group(1)
        for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr)
        if not m.group(2) and m.group(1).lower() not in _KEYWORDS
    }


def queried_names() -> dict[str, list[str]]:
    """Metric name → where it is queried (dashboard panel titles and alert names)."""
    where: dict[str, list[str]] = defaultdict(list)
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                where[name].append(f"dashboard: {panel['title']}")
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in metric_names(str(rule["expr"])):
                    where[name].append(f"{path.name}: {rule.get('alert') or rule.get('record')}")
    return dict(where)
