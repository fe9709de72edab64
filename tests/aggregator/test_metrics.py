"""Per-instance metrics registry and its exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from aggregator.metrics import PREFIX, AggregatorMetrics


def samples(m: AggregatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_two_instances_do_not_share_state() -> None:
    a, b = AggregatorMetrics(), AggregatorMetrics()
    a.readings_stored.inc(5)
    assert samples(a)[(f"{PREFIX}_readings_stored_total", ())] == 5
    assert samples(b)[(f"{PREFIX}_readings_stored_total", ())] == 0


def test_exposition_contains_counters_after_activity() -> None:
    m = AggregatorMetrics()
    m.messages_in.labels(kind="telemetry").inc(3)
    m.messages_verified.labels(kind="telemetry").inc(2)
    m.messages_rejected.labels(reason="bad_signature").inc()
    m.observe_stored(batches=2, readings=300, duplicates=1)
    m.observe_lag(0.25)
    m.observe_lag(-1.0)  # clock skew: clamped
    m.commands_sent.labels(action="battery.auto").inc()
    m.command_rtt.observe(0.04)
    m.set_active_alarms({"critical": 2, "minor": 1})
    s = samples(m)
    p = PREFIX
    assert s[(f"{p}_messages_in_total", (("kind", "telemetry"),))] == 3
    assert s[(f"{p}_messages_verified_total", (("kind", "telemetry"),))] == 2
    assert s[(f"{p}_messages_rejected_total", (("reason", "bad_signature"),))] == 1
    assert s[(f"{p}_batches_stored_total", ())] == 2
    assert s[(f"{p}_readings_stored_total", ())] == 300
    assert s[(f"{p}_duplicates_total", ())] == 1
    assert s[(f"{p}_ingest_lag_seconds_count", ())] == 2
    assert s[(f"{p}_ingest_lag_last_seconds", ())] == 0.0
    assert s[(f"{p}_command_rtt_seconds_bucket", (("le", "0.05"),))] == 1
    assert s[(f"{p}_command_rtt_seconds_bucket", (("le", "0.03"),))] == 0
    assert s[(f"{p}_alarms_active", (("severity", "critical"),))] == 2
    assert s[(f"{p}_alarms_active", (("severity", "major"),))] == 0
    m.set_active_alarms({})
    assert samples(m)[(f"{p}_alarms_active", (("severity", "critical"),))] == 0
