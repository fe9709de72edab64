"""The aggregator's parts, wired once and handed to the API (`create_app(services)`), the CLI
and, later, the control loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aggregator.alarm_monitor import AlarmMonitor
from aggregator.commands import Commands
from aggregator.config import AggregatorConfig
from aggregator.ingest import Ingest, IngestStats
from aggregator.metrics import AggregatorMetrics
from aggregator.sites import SiteRegistry
from aggregator.storage import Storage
from protocols.clock import Clock

if TYPE_CHECKING:
    from aggregator.control.loop import ControlLoop


@dataclass
class Services:
    storage: Storage
    config: AggregatorConfig
    metrics: AggregatorMetrics
    commands: Commands | None
    ingest: Ingest | None
    clock: Clock
    registry: SiteRegistry
    alarms: AlarmMonitor | None = None
    control: ControlLoop | None = None  # set while `serve` runs the control loop

    @property
    def ingest_stats(self) -> IngestStats | None:
        return None if self.ingest is None else self.ingest.stats

    def keys_changed(self) -> None:
        """Called by the API after an enrolment, rotation or revocation: ingest reloads keys."""
        self.registry.changed()
        if self.ingest is not None:
            self.ingest.keys_changed()


__all__ = ["Services"]
