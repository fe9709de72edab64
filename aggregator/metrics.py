"""Prometheus metrics of one aggregator instance.

Each `AggregatorMetrics` owns its `CollectorRegistry`: nothing is registered globally, so tests
and several aggregators in one process never clash. Ingest, commands and alarms update the
instruments below; `GET /metrics` renders `exposition()`.

Names (all prefixed `sitewatt_aggregator_`):

    messages_in_total{kind}              MQTT messages received (telemetry, state, ack, other)
    messages_verified_total{kind}        of them, signature and topic verified
    messages_rejected_total{reason}      dropped: bad_signature, unknown_kid, revoked, wrong_topic,
                                         malformed, stale, …
    batches_stored_total                 telemetry batches committed
    readings_stored_total                readings committed
    duplicates_total                     batches dropped as already stored (same site, seq)
    ingest_lag_seconds                   histogram: received − sent, live batches
    ingest_lag_last_seconds              gauge: the last live batch's lag
    commands_sent_total{action}          commands sealed and published
    command_acks_total{status}           acks received: applied, rejected, failed, timeout
    command_rtt_seconds                  histogram: command sent → ack stored
    alarms_raised_total{kind}            alarms raised
    alarms_cleared_total{kind}           alarms cleared
    alarms_active{severity}              alarms active now
    sites_online                         sites whose last state is online
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "sitewatt_aggregator"
CONTENT_TYPE = CONTENT_TYPE_LATEST

SEVERITIES = ("critical", "major", "minor", "warning")

_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# The command round-trip target is p99 <= 100 ms: resolve well below and around it.
_RTT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AggregatorMetrics:
    """The aggregator's instruments, on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.messages_in = Counter(
            f"{p}_messages_in", "MQTT messages received", ["kind"], registry=r
        )
        self.messages_verified = Counter(
            f"{p}_messages_verified", "MQTT messages whose signature verified", ["kind"], registry=r
        )
        self.messages_rejected = Counter(
            f"{p}_messages_rejected", "MQTT messages dropped, by reason", ["reason"], registry=r
        )
        self.batches_stored = Counter(
            f"{p}_batches_stored", "telemetry batches committed", registry=r
        )
        self.readings_stored = Counter(f"{p}_readings_stored", "readings committed", registry=r)
        self.duplicates = Counter(
            f"{p}_duplicates", "telemetry batches dropped as already stored", registry=r
        )
        self.ingest_lag = Histogram(
            f"{p}_ingest_lag_seconds",
            "received minus sent time of live telemetry batches",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.ingest_lag_last = Gauge(
            f"{p}_ingest_lag_last_seconds", "lag of the last live telemetry batch", registry=r
        )
        self.commands_sent = Counter(
            f"{p}_commands_sent", "commands published", ["action"], registry=r
        )
        self.command_acks = Counter(
            f"{p}_command_acks", "command outcomes, by status", ["status"], registry=r
        )
        self.command_rtt = Histogram(
            f"{p}_command_rtt_seconds",
            "command round trip: sent to ack stored",
            buckets=_RTT_BUCKETS,
            registry=r,
        )
        self.alarms_raised = Counter(f"{p}_alarms_raised", "alarms raised", ["kind"], registry=r)
        self.alarms_cleared = Counter(f"{p}_alarms_cleared", "alarms cleared", ["kind"], registry=r)
        self.alarms_active = Gauge(
            f"{p}_alarms_active", "alarms active now, by severity", ["severity"], registry=r
        )
        self.sites_online = Gauge(
            f"{p}_sites_online", "sites whose last state is online", registry=r
        )
        for severity in SEVERITIES:
            self.alarms_active.labels(severity=severity).set(0)

    # Convenience for the callers with the hottest paths: one call per batch group, not per reading.

    def observe_stored(self, *, batches: int, readings: int, duplicates: int) -> None:
        """Count one committed group of batches."""
        if batches:
            self.batches_stored.inc(batches)
        if readings:
            self.readings_stored.inc(readings)
        if duplicates:
            self.duplicates.inc(duplicates)

    def observe_lag(self, lag_s: float) -> None:
        """Record one live batch's ingest lag (clamped at 0 for clocks slightly ahead)."""
        lag = max(0.0, lag_s)
        self.ingest_lag.observe(lag)
        self.ingest_lag_last.set(lag)

    def set_active_alarms(self, counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
        """Set the active-alarm gauge from severity -> count (missing severities become 0)."""
        items = dict(counts.items() if isinstance(counts, Mapping) else counts)
        for severity in set(SEVERITIES) | set(items):
            self.alarms_active.labels(severity=severity).set(items.get(severity, 0))

    def exposition(self) -> bytes:
        """The Prometheus text format of every instrument."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "PREFIX", "SEVERITIES", "AggregatorMetrics"]
