"""The web dashboard served by the aggregator: plain HTML, CSS and JS pages under `/ui/` that read
the REST API with the user's bearer token; uPlot (vendored, see static/vendor/README.md) draws the
charts. `mount_dashboard(app)` adds it to the app `aggregator.api.create_app` builds."""

from aggregator.dashboard.bands import Band, dormant_windows, tariff_bands
from aggregator.dashboard.routes import UI_PREFIX, TariffBook, mount_dashboard

__all__ = [
    "UI_PREFIX",
    "Band",
    "TariffBook",
    "dormant_windows",
    "mount_dashboard",
    "tariff_bands",
]
