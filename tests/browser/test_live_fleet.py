"""The dashboard over a live simulated fleet: three simulated sites, a real agent each, real
mosquitto, the real aggregator service. Chart points are checked against the API, commands are
acknowledged by the real agents, and cutting a site's mains raises an alarm the pages show.
Screenshots go to each test's tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import shot
from tests.browser.live_fleet import LiveFleet
from tests.browser.test_dashboard import chart, login

pytestmark = pytest.mark.timeout(120)

FAST = "poll=1000"  # the pages' refresh period for these tests (ms)


def step_product(a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
    """The dashboard's step-hold product of two series (load = current × voltage)."""
    times = sorted({t for t, _ in a} | {t for t, _ in b})
    ia = ib = 0
    va = vb = None
    out: list[list[Any]] = []
    for t in times:
        while ia < len(a) and a[ia][0] <= t:
            va = a[ia][1]
            ia += 1
        while ib < len(b) and b[ib][0] <= t:
            vb = b[ib][1]
            ib += 1
        if va is not None and vb is not None:
            out.append([t, abs(va * vb)])
    return out


def api_series(live: LiveFleet, site: str, device: str, point: str, shown: dict[str, Any]) -> Any:
    """The API's readings over the chart's range, up to the chart's last point (readings that
    arrived after the chart fetched them are not expected on it)."""
    page = live.api(
        f"/api/sites/{site}/readings",
        device=device,
        point=point,
        limit=10000,
        from_=shown["from_ms"],
        to=shown["to_ms"],
    )
    rows = page["readings"]
    return [[r["t_ms"], r["value"]] for r in rows if isinstance(r["value"], int | float)]


def upto(points: list[list[Any]], last: int) -> list[list[Any]]:
    return [p for p in points if p[0] <= last]


def test_fleet_online_and_site_charts_plot_the_live_readings(
    page: Any, live: LiveFleet, tmp_path: Path
) -> None:
    login(page, live, "operator", start=f"/ui/?{FAST}")
    page.get_by_test_id("sites-online").filter(has_text="3 / 3").wait_for()
    for s in live.specs:
        row = page.locator(f"#fleet tbody tr[data-site='{s.site}']")
        assert row.get_attribute("data-online") == "true"
        assert "online" in row.inner_text()
    shot(page, tmp_path, "live-fleet")

    page.locator("#fleet a", has_text="live-b").click()
    page.wait_for_url("**/ui/sites/live-b")
    # Let a few polls land, then check what is drawn against the API, point by point.
    page.wait_for_function(
        "window.sitewattCharts && window.sitewattCharts.soc"
        " && window.sitewattCharts.soc.points.length >= 5"
        " && window.sitewattCharts.load.points.length >= 5",
        timeout=40_000,
    )
    soc = chart(page, "soc")
    last = soc["points"][-1][0]
    assert soc["points"] == upto(api_series(live, "live-b", "battery", "soc", soc), last)
    grid = chart(page, "grid")
    assert grid["points"] == upto(
        api_series(live, "live-b", "meter", "import_power", grid), grid["points"][-1][0]
    )
    assert all(p[1] > 0 for p in grid["points"])
    load = chart(page, "load")
    amps = api_series(live, "live-b", "rectifier", "load_current", load)
    volts = api_series(live, "live-b", "rectifier", "dc_voltage", load)
    expected = upto(step_product(amps, volts), load["points"][-1][0])
    assert load["points"] == expected  # the same IEEE products as in the browser
    assert 500 < load["points"][-1][1] < 20_000  # a plausible telecom DC load (W)
    assert soc["tariff"], "tariff bands drawn from the site's tariff"
    # Live: more points arrive without a reload.
    n = len(soc["points"])
    page.wait_for_function(f"window.sitewattCharts.soc.points.length > {n}", timeout=40_000)
    page.get_by_label("1 h").check()
    page.wait_for_function(
        "window.sitewattCharts.soc.to_ms - window.sitewattCharts.soc.from_ms === 3600000"
    )
    shot(page, tmp_path, "live-site")


def test_operator_command_is_acknowledged_by_the_agent(page: Any, live: LiveFleet) -> None:
    login(page, live, "operator", start=f"/ui/sites/live-a?{FAST}")
    form = page.locator("form.cmd[data-action='ac.setpoint']")
    form.get_by_label("Setpoint (°C)").fill("26")
    form.get_by_role("button", name="Send").click()
    result = page.get_by_test_id("cmd-result")
    result.filter(has_text="ac.setpoint sent as #").wait_for()
    command_id = result.get_attribute("data-command-id")
    row = page.locator(f"#command-history tr[data-id='{command_id}']")
    row.and_(page.locator("tr[data-status=applied]")).wait_for(timeout=30_000)
    text = row.inner_text()
    assert "setpoint_c=26" in text
    stored = next(
        c for c in live.api("/api/sites/live-a/commands")["commands"] if c["id"] == command_id
    )
    assert stored["status"] == "applied" and stored["ack_ms"] is not None
    assert stored["readback"], "the agent read the setpoint back"
    # The read-back shown is the one stored.
    first_key = next(iter(stored["readback"]))
    assert first_key in text


def test_viewer_gets_no_command_buttons_and_a_403(page: Any, live: LiveFleet) -> None:
    login(page, live, "viewer", start=f"/ui/sites/live-a?{FAST}")
    page.wait_for_selector("body[data-loaded=true]")
    page.wait_for_function("!document.getElementById('command-panel')")
    assert page.get_by_role("button", name="Send").count() == 0
    status = page.evaluate(
        """async () => (await fetch('/api/sites/live-a/commands', {method: 'POST',
              headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('sitewatt.token'),
                        'Content-Type': 'application/json'},
              body: JSON.stringify({action: 'site.wake', params: {}})})).status"""
    )
    assert status == 403


def test_cutting_mains_raises_an_alarm_on_the_pages(
    page: Any, live: LiveFleet, tmp_path: Path
) -> None:
    login(page, live, "viewer", start=f"/ui/alarms?{FAST}")
    page.wait_for_selector("#active-alarms")
    assert page.locator("#active-alarms tr[data-kind=mains_failure][data-site=live-c]").count() == 0
    model = live.sites["live-c"].runtime.model
    live.call(lambda: setattr(model.overrides, "mains", False))
    try:
        alarm = page.locator("#active-alarms tr[data-kind=mains_failure][data-site=live-c]")
        alarm.wait_for(timeout=40_000)
        assert "live-c" in alarm.inner_text()
        shot(page, tmp_path, "live-alarm")
        page.goto(f"{live.url}/ui/sites/live-c?{FAST}")
        page.get_by_test_id("site-alarms").locator("li[data-kind=mains_failure]").wait_for()
        page.goto(f"{live.url}/ui/?{FAST}")
        page.wait_for_selector("#fleet tbody tr[data-site=live-c]:not([data-alarms='0'])")
    finally:
        live.call(lambda: setattr(model.overrides, "mains", None))
    page.goto(f"{live.url}/ui/alarms?{FAST}")
    cleared = page.locator("#alarm-history tr[data-kind=mains_failure][data-site=live-c]")
    cleared.and_(page.locator("tr[data-active=false]")).wait_for(timeout=40_000)
