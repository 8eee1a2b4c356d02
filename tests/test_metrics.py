"""Metrics: the facade's instruments and their Prometheus text exposition."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator

import pytest

from gitdock.agent.metrics import (
    DURATION_BUCKETS,
    Metrics,
    create_metrics,
    get_metrics,
    prometheus_name,
    render_prometheus,
    set_metrics,
)

# Prometheus text format 0.0.4, line by line.
_METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
_VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|Inf)|NaN)"
SAMPLE = re.compile(rf"^({_METRIC})(\{{{_LABEL}(?:,{_LABEL})*\}})? ({_VALUE})$")
HELP = re.compile(rf"^# HELP ({_METRIC}) .*$")
TYPE = re.compile(rf"^# TYPE ({_METRIC}) (counter|gauge|histogram|summary|untyped)$")


def parse_exposition(text: str) -> dict[str, tuple[str, list[tuple[str, str, float]]]]:
    """Validate ``text`` and return {family: (type, [(sample name, labels, value)])}.

    Enforces: every line parses; HELP then TYPE precede a family's samples; a family appears
    once; sample names belong to their family (``_bucket``/``_sum``/``_count`` for histograms).
    """
    assert text.endswith("\n")
    families: dict[str, tuple[str, list[tuple[str, str, float]]]] = {}
    current: str | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := HELP.match(line):
            assert m.group(1) not in families, f"family {m.group(1)} repeated"
            assert TYPE.match(lines[i + 1]) and lines[i + 1].split()[2] == m.group(1), line
            continue
        if m := TYPE.match(line):
            current = m.group(1)
            families[current] = (m.group(2), [])
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        assert current is not None
        kind, samples = families[current]
        allowed = {current} if kind != "histogram" else {f"{current}_{s}" for s in ("bucket", "sum", "count")}
        assert m.group(1) in allowed, f"{m.group(1)} under family {current}"
        samples.append((m.group(1), m.group(2) or "", float(m.group(3).replace("Inf", "inf"))))
    return families


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    real, provider = create_metrics()
    yield real
    provider.shutdown()


def test_noop_metrics_record_nothing_and_render_empty() -> None:
    noop = Metrics.noop()
    noop.record_reconcile("p", "success", 1.0)
    noop.set_drift("p", 3)
    assert noop.is_noop
    assert noop.render_prometheus() == ""


def test_process_metrics_are_noop_until_installed(metrics: Metrics) -> None:
    assert get_metrics().is_noop and render_prometheus() == ""
    set_metrics(metrics)
    try:
        get_metrics().count_operation("CreateContainer")
        assert 'gitdock_operations_total{kind="CreateContainer",result="done"} 1' in render_prometheus()
    finally:
        set_metrics(Metrics.noop())


def test_every_instrument_renders_as_valid_prometheus_text(metrics: Metrics) -> None:
    edge = metrics.for_host("tcp://edge-1:2376")
    edge.record_reconcile("webapp", "success", 0.2)
    edge.record_reconcile("webapp", "success", 3.0)
    edge.record_reconcile("webapp", "failure", 0.01)
    metrics.count_operation("CreateContainer")
    metrics.count_operation("CreateContainer")
    metrics.count_operation("WaitHealthy", "failed")
    edge.set_drift("webapp", 4)
    edge.set_drift("webapp", 0)
    edge.set_last_apply("webapp", 1_764_000_000.5)
    metrics.count_verification_failure("no_signature")
    edge.record_git_fetch("webapp-repo", 0.7)
    families = parse_exposition(metrics.render_prometheus())
    assert {name: kind for name, (kind, _) in families.items()} == {
        "gitdock_reconcile_duration_seconds": "histogram",
        "gitdock_reconciles_total": "counter",
        "gitdock_operations_total": "counter",
        "gitdock_drift_items": "gauge",
        "gitdock_last_apply_timestamp_seconds": "gauge",
        "gitdock_verification_failures_total": "counter",
        "gitdock_git_fetch_duration_seconds": "histogram",
    }
    assert sorted(families["gitdock_reconciles_total"][1]) == [
        ("gitdock_reconciles_total", '{host="tcp://edge-1:2376",project="webapp",result="failure"}', 1),
        ("gitdock_reconciles_total", '{host="tcp://edge-1:2376",project="webapp",result="success"}', 2),
    ]
    assert sorted(families["gitdock_operations_total"][1]) == [
        ("gitdock_operations_total", '{kind="CreateContainer",result="done"}', 2),
        ("gitdock_operations_total", '{kind="WaitHealthy",result="failed"}', 1),
    ]
    host = 'host="tcp://edge-1:2376"'
    assert families["gitdock_drift_items"][1] == [("gitdock_drift_items", f'{{{host},project="webapp"}}', 0)]
    assert families["gitdock_last_apply_timestamp_seconds"][1] == [
        ("gitdock_last_apply_timestamp_seconds", f'{{{host},project="webapp"}}', 1_764_000_000.5)
    ]
    fetches = families["gitdock_git_fetch_duration_seconds"][1]
    assert ("gitdock_git_fetch_duration_seconds_count", f'{{{host},source="webapp-repo"}}', 1) in fetches
    assert families["gitdock_verification_failures_total"][1] == [
        ("gitdock_verification_failures_total", '{reason="no_signature"}', 1)
    ]


def test_histogram_buckets_are_cumulative_and_end_with_inf(metrics: Metrics) -> None:
    for seconds in (0.2, 3.0, 700.0):
        metrics.record_reconcile("webapp", "success", seconds)
    _, samples = parse_exposition(metrics.render_prometheus())["gitdock_reconcile_duration_seconds"]
    buckets = [(labels, value) for name, labels, value in samples if name.endswith("_bucket")]
    bounds = [float(re.findall(r'le="([^"]+)"', labels)[0].replace("Inf", "inf")) for labels, _ in buckets]
    assert bounds == [*map(float, DURATION_BUCKETS), math.inf]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert counts[bounds.index(0.25)] == 1  # 0.2 s
    assert counts[bounds.index(5.0)] == 2  # and 3 s
    assert counts[-2] == 2 and counts[-1] == 3  # 700 s only in +Inf
    by_name = {name: value for name, labels, value in samples if not name.endswith("_bucket")}
    assert by_name["gitdock_reconcile_duration_seconds_count"] == 3
    assert by_name["gitdock_reconcile_duration_seconds_sum"] == pytest.approx(703.2)
    # The +Inf bucket carries the series' own labels too (their order is the exposition's business).
    inf_labels = next(labels for labels, _ in buckets if 'le="+Inf"' in labels)
    assert sorted(inf_labels.strip("{}").split(",")) == ['le="+Inf"', 'project="webapp"', 'result="success"']


def test_each_host_view_labels_its_own_series_and_shares_the_instruments(metrics: Metrics) -> None:
    local, edge = metrics.for_host("unix:///var/run/docker.sock"), metrics.for_host("edge-ctx")
    local.record_reconcile("web", "success", 0.1)
    edge.record_reconcile("web", "success", 0.1)
    edge.count_rollback("web", "success")
    edge.count_operation("CreateContainer")
    metrics.record_reconcile("web", "success", 0.1)  # no host: Prometheus shows it empty, as unset
    assert (metrics.host, local.host, edge.host) == ("", "unix:///var/run/docker.sock", "edge-ctx")
    families = parse_exposition(metrics.render_prometheus())
    assert sorted(families["gitdock_reconciles_total"][1]) == [
        ("gitdock_reconciles_total", '{host="",project="web",result="success"}', 1),
        ("gitdock_reconciles_total", '{host="edge-ctx",project="web",result="success"}', 1),
        (
            "gitdock_reconciles_total",
            '{host="unix:///var/run/docker.sock",project="web",result="success"}',
            1,
        ),
    ]
    assert families["gitdock_rollbacks_total"][1] == [
        ("gitdock_rollbacks_total", '{host="edge-ctx",project="web",result="success"}', 1)
    ]
    assert families["gitdock_operations_total"][1] == [
        ("gitdock_operations_total", '{host="edge-ctx",kind="CreateContainer",result="done"}', 1)
    ]


def test_label_values_are_escaped(metrics: Metrics) -> None:
    metrics.count_verification_failure('bad "sig"\\path\nline')
    text = metrics.render_prometheus()
    parse_exposition(text)
    assert 'gitdock_verification_failures_total{reason="bad \\"sig\\"\\\\path\\nline"} 1' in text


def test_recording_from_many_threads_loses_nothing(metrics: Metrics) -> None:
    def work() -> None:
        for _ in range(500):
            metrics.count_operation("StartContainer")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 'gitdock_operations_total{kind="StartContainer",result="done"} 4000' in metrics.render_prometheus()


@pytest.mark.parametrize(
    ("name", "unit", "counter", "expected"),
    [
        ("gitdock.reconcile.duration", "s", False, "gitdock_reconcile_duration_seconds"),
        ("gitdock.reconciles", "1", True, "gitdock_reconciles_total"),
        ("gitdock.received", "By", True, "gitdock_received_bytes_total"),
        ("x.latency_seconds", "s", False, "x_latency_seconds"),
        ("9lives", "", False, "_9lives"),
    ],
)
def test_prometheus_name_follows_the_otel_compatibility_rules(
    name: str, unit: str, counter: bool, expected: str
) -> None:
    assert prometheus_name(name, unit, counter=counter) == expected
