"""The Prometheus rules and the dashboard under deploy/: promtool checks and unit-tests the rules, every
alert is tested firing and not firing and has its runbook, the calendar rules are the generated ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from connector.market import BUNDLED_CALENDAR, EXCHANGES, load_calendar, prometheus_rules
from tests.promql import metric_names, queried_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
TEST_CALENDAR = "deploy/prometheus/tests/holidays-1970.txt"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts() -> dict[str, dict[str, Any]]:
    """Every alert the deployed rule files define, by name."""
    return {
        rule["alert"]: rule
        for path in RULES
        for group in _yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    # not a skip: CI must run these, and `bash scripts/test.sh` installs promtool (Debian's prometheus)
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/test.sh does it)"
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)


def test_promtool_checks_the_rules_and_the_configuration() -> None:
    rules = [str(p.relative_to(PROMETHEUS)) for p in [*RULES, *(PROMETHEUS / "tests").glob("*.rules.yml")]]
    checked = _promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_pass() -> None:
    tested = _promtool("test", "rules", *(str(p.relative_to(PROMETHEUS)) for p in TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(TESTS)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for group in _yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_every_alert_has_a_severity_and_a_runbook_paragraph_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = {line.lstrip("#").strip() for line in readme.splitlines() if line.startswith("#")}
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["runbook"] == f"README.md#{name.lower()}", name
        assert name in headings, f"README.md has no section {name} (the runbook anchor)"


def test_the_committed_calendar_rules_are_generated_from_the_holidays_files() -> None:
    real = prometheus_rules(load_calendar(), BUNDLED_CALENDAR)
    assert (PROMETHEUS / "rules" / "market.rules.yml").read_text() == real, (
        "stale: kite-connector market-calendar --prometheus-rules > deploy/prometheus/rules/market.rules.yml"
    )
    test = prometheus_rules(load_calendar(str(ROOT / TEST_CALENDAR)), TEST_CALENDAR)
    assert (PROMETHEUS / "tests" / "market-1970.rules.yml").read_text() == test, "stale test calendar rules"


def test_the_promtool_calendar_answers_are_the_calendars() -> None:
    """market.test.yml's expected open exchanges, asked of MarketCalendar: two implementations agree."""
    calendar = load_calendar(str(ROOT / TEST_CALENDAR))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    checked = 0
    for group in _yaml(PROMETHEUS / "tests" / "market.test.yml")["tests"]:
        for case in group["promql_expr_test"]:
            if case["expr"] != "kite:market_open == 1":
                continue
            hours, _, minutes = case["eval_time"].rstrip("m").partition("h")
            when = epoch + timedelta(hours=int(hours), minutes=int(minutes or 0))
            expected = {re.search(r'exchange="(\w+)"', s["labels"])[1] for s in case["exp_samples"]}  # type: ignore[index]
            assert expected == {e for e in EXCHANGES if calendar.is_open(e, when)}, when
            checked += 1
    assert checked >= 10


def test_drill_rules_record_every_exchange_open() -> None:
    drill = yaml.safe_load(prometheus_rules(load_calendar(), BUNDLED_CALENDAR, always_open=True))
    rules = drill["groups"][0]["rules"]
    seconds = {
        r["labels"]["exchange"]: r["expr"] for r in rules if r.get("record") == "kite:market_open_seconds"
    }
    assert set(seconds) == set(EXCHANGES) and set(seconds.values()) == {"vector(86400)"}
    assert not any("alert" in r for r in rules), "a drill does not warn about the holidays"


def test_the_thresholds_cover_every_exchange() -> None:
    rules = _yaml(PROMETHEUS / "rules" / "thresholds.rules.yml")["groups"][0]["rules"]
    silent = {r["labels"]["exchange"] for r in rules if r["record"] == "kite:threshold:feed_silent_seconds"}
    assert silent == set(EXCHANGES)


def test_prometheus_scrapes_the_connector_and_the_candle_processor_and_loads_the_rules() -> None:
    config = _yaml(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["kite-connector"]["static_configs"][0]["targets"] == ["connector:9100"]
    assert jobs["kite-candles"]["dns_sd_configs"][0]["port"] == 9101
    assert config["rule_files"] == ["rules/*.yml"]
    for alert in ("KiteConnectorDown", "KiteCandlesDown"):
        job = "kite-connector" if alert == "KiteConnectorDown" else "kite-candles"
        assert f'up{{job="{job}"}}' in _alerts()[alert]["expr"], "the alert watches the job scraped"


def test_the_dashboard_is_grafana_json_with_the_panels_operators_need() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "kite-kafka.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in (
        "Ticks received per second, by connection",
        "Records delivered per second, by topic",
        "Records in flight",
        "Receive → Kafka acknowledgement latency",
        "Connections up",
        "Order updates waiting in the order log",
        "Candle processor lag",
        "Seconds since the last tick, by exchange",
    ):
        assert needed in titles
    assert all(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))


def test_metric_names_of_an_expression() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 1e9 and on(e) kite:b offset 5m'
    )
    assert metric_names(expr) == {"a_bucket", "kite:b"}


def test_every_recorded_series_queried_is_recorded_by_a_rule() -> None:
    recorded = {
        rule["record"]
        for path in [*RULES, PROMETHEUS / "rules" / "thresholds.rules.yml"]
        for group in _yaml(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    assert {n for n in queried_names() if n.startswith("kite:")} <= recorded
