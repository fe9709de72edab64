"""What the reports, the API and the CLI share with the loop: settings, policies and tariffs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aggregator.control.policies import PolicyBook, load_layers, load_overrides
from aggregator.control.settings import ControlSettings, settings_from_config
from aggregator.storage.base import Storage
from aggregator.storage.types import SiteInfo
from protocols.control.tariff import Tariff, load_tariffs


@dataclass
class ControlContext:
    settings: ControlSettings
    book: PolicyBook
    tariffs: dict[str, Tariff] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: ControlSettings, storage: Storage | None = None) -> ControlContext:
        """Policy files, the API overrides kept in `storage` (if given), and the tariffs."""
        layers = load_layers(settings.policies_dir)
        if storage is not None:
            layers += load_overrides(storage)
        d = settings.tariffs_dir
        tariffs = load_tariffs(d) if d.is_dir() else {}
        return cls(settings, PolicyBook(layers), tariffs)

    @classmethod
    def for_services(cls, services: Any) -> ControlContext:
        config = getattr(services, "config", None)
        settings = settings_from_config(config) if config is not None else ControlSettings()
        return cls.load(settings, services.storage)

    def members(self, group: str, sites: list[SiteInfo]) -> list[str]:
        return self.book.members(group, sites)


__all__ = ["ControlContext"]
