"""Energy, cost and CO2 reports from storage (JSON, CSV and PNG charts)."""

from aggregator.reports.build import CSV_COLUMNS, ReportSet, SiteSeries, build_report, site_series
from aggregator.reports.charts import daily_chart, savings_chart, site_chart, write_report

__all__ = [
    "CSV_COLUMNS",
    "ReportSet",
    "SiteSeries",
    "build_report",
    "daily_chart",
    "savings_chart",
    "site_chart",
    "site_series",
    "write_report",
]
