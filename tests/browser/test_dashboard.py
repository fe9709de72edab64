"""The dashboard in a real browser (Debian's chromium via Playwright) against a real aggregator
HTTP server over a stored fleet: login, fleet, site charts checked point by point against the
API, commands by role, alarms, reports, narrow layout. Screenshots go to each test's tmp_path."""

from __future__ import annotations

import csv
import io
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import FLEET, Aggregator, shot
from tests.browser.live_fleet import LiveFleet

pytestmark = pytest.mark.timeout(90)


def login(page: Any, agg: Aggregator | LiveFleet, role: str, *, start: str = "/ui/") -> None:
    """Open `start`, get sent to the login page, sign in with the role's token, come back."""
    page.goto(f"{agg.url}{start}")
    page.wait_for_url("**/ui/login**")
    page.get_by_label("Token").fill(agg.tokens[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{agg.url}{start}")
    page.wait_for_function("document.getElementById('who').dataset.role !== undefined")


def fleet_rows(page: Any) -> list[str]:
    result: list[str] = page.eval_on_selector_all(
        "#fleet tbody tr", "rows => rows.map(r => r.dataset.site)"
    )
    return result


def test_root_redirects_to_login_and_a_bad_token_is_refused(
    page: Any, aggregator: Aggregator
) -> None:
    page.goto(f"{aggregator.url}/")
    page.wait_for_url("**/ui/login?next=**")
    page.get_by_label("Token").fill("swt_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="unknown or revoked").wait_for()
    assert page.evaluate("sessionStorage.getItem('sitewatt.token')") is None


def test_login_shows_every_site_with_totals_sort_and_filters(
    page: Any, aggregator: Aggregator, tmp_path: Path
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    login(page, aggregator, "operator")
    page.wait_for_selector("#fleet[data-loaded=true] tbody tr")
    assert sorted(fleet_rows(page)) == sorted(aggregator.sites)
    # Everything comes from the aggregator itself: no CDN, no third party.
    assert requested and all(u.startswith(aggregator.url + "/") for u in requested), requested
    # The token travels as a bearer header, kept for the tab only.
    held = page.evaluate("sessionStorage.getItem('sitewatt.token')")
    assert held == aggregator.tokens["operator"]
    assert page.evaluate("localStorage.getItem('sitewatt.token')") is None

    api_sites = {s["site"]: s for s in aggregator.api("/api/sites")}
    online = [s for s in api_sites.values() if s["online"]]
    assert page.get_by_test_id("sites-online").inner_text() == f"{len(online)} / {len(api_sites)}"
    total_load_kw = sum(s["key_points"]["load_w"] for s in online) / 1000
    assert page.get_by_test_id("total-load").inner_text() == f"{total_load_kw:.2f} kW"
    total_grid_kw = sum(s["key_points"]["grid_import_w"] for s in online) / 1000
    assert page.get_by_test_id("total-grid").inner_text() == f"{total_grid_kw:.2f} kW"

    for spec in FLEET:
        row = page.locator(f"#fleet tbody tr[data-site='{spec.site}']")
        assert row.get_attribute("data-online") == str(spec.online).lower()
        assert ("online" if spec.online else "offline") in row.inner_text()
        soc = api_sites[spec.site]["key_points"]["soc"]
        assert f"{soc:.0f} %" in row.inner_text()
    shot(page, tmp_path, "fleet-wide")

    # Sort by load, both ways (click the header twice).
    by_load = sorted(api_sites.values(), key=lambda s: s["key_points"]["load_w"])
    page.get_by_role("button", name="Load", exact=True).click()
    assert fleet_rows(page) == [s["site"] for s in by_load]
    assert page.locator("th[data-key=load]").get_attribute("aria-sort") == "ascending"
    page.get_by_role("button", name="Load", exact=True).click()
    assert fleet_rows(page) == [s["site"] for s in reversed(by_load)]

    # Filters: offline only, alarms only, free text.
    page.get_by_role("radio", name="Offline").check()
    assert fleet_rows(page) == ["west-03"]
    page.get_by_role("radio", name="With alarms").check()
    assert sorted(fleet_rows(page)) == ["east-02", "west-03"]
    page.get_by_role("radio", name="All").check()
    page.get_by_label("Filter sites").fill("harbour")
    assert fleet_rows(page) == ["east-02"]


def chart(page: Any, name: str) -> dict[str, Any]:
    page.wait_for_function(f"window.sitewattCharts && window.sitewattCharts['{name}']")
    data: dict[str, Any] = page.evaluate(f"window.sitewattCharts['{name}']")
    return data


def series(agg: Aggregator, site: str, device: str, point: str, t0: int, t1: int) -> list[Any]:
    url = f"/api/sites/{site}/readings"
    page = agg.api(url, device=device, point=point, limit=10000, from_=t0, to=t1)
    return [[r["t_ms"], r["value"]] for r in page["readings"]]


def test_site_charts_plot_exactly_the_api_readings_over_tariff_bands(
    page: Any, aggregator: Aggregator, tmp_path: Path
) -> None:
    login(page, aggregator, "viewer", start="/ui/sites/north-01")
    page.wait_for_selector(".charts[data-ready=true]")
    soc = chart(page, "soc")
    t0, t1 = soc["from_ms"], soc["to_ms"]
    assert t1 - t0 == 6 * 3600 * 1000  # the default range

    api_soc = series(aggregator, "north-01", "bat", "soc", t0, t1)
    assert len(api_soc) == 180
    assert soc["points"] == api_soc
    assert chart(page, "grid")["points"] == series(
        aggregator, "north-01", "meter", "import_power", t0, t1
    )
    # Load = load current × DC voltage; battery power = voltage × current (+ charge).
    amps = dict(series(aggregator, "north-01", "rect", "load_current", t0, t1))
    volts = dict(series(aggregator, "north-01", "rect", "dc_voltage", t0, t1))
    assert chart(page, "load")["points"] == [[t, abs(amps[t] * volts[t])] for t in sorted(amps)]
    bat_v = dict(series(aggregator, "north-01", "bat", "voltage", t0, t1))
    bat_a = dict(series(aggregator, "north-01", "bat", "current", t0, t1))
    battery = chart(page, "battery")["points"]
    assert battery == [[t, bat_v[t] * bat_a[t]] for t in sorted(bat_a)]
    assert min(p[1] for p in battery) < 0 < max(p[1] for p in battery)

    # Tariff bands cover the range, from the site's tariff; the canvas really drew something.
    bands = soc["tariff"]
    assert bands and bands[0]["start_ms"] == t0 and bands[-1]["end_ms"] == t1
    assert {b["kind"] for b in bands} <= {"critical_peak", "peak", "flat", "valley"}
    assert all(a["end_ms"] == b["start_ms"] for a, b in pairwise(bands))
    assert page.locator("#chart-soc canvas").count() == 1
    painted = page.evaluate(
        """() => { const c = document.querySelector('#chart-soc canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert painted > 1000

    # A shorter range refetches and shows only its points.
    page.get_by_label("1 h").check()
    page.wait_for_function(
        "window.sitewattCharts.soc.to_ms - window.sitewattCharts.soc.from_ms === 3600000"
    )
    one_hour = chart(page, "soc")
    assert one_hour["points"] == series(
        aggregator, "north-01", "bat", "soc", one_hour["from_ms"], one_hour["to_ms"]
    )
    assert 55 <= len(one_hour["points"]) <= 60  # one-minute polls
    shot(page, tmp_path, "site-wide")


def test_site_devices_mark_comm_errors_and_list_alarms(
    page: Any, aggregator: Aggregator, tmp_path: Path
) -> None:
    login(page, aggregator, "viewer", start="/ui/sites/east-02")
    page.wait_for_selector("body[data-loaded=true]")
    brk = page.locator(".device[data-device=brk]")
    assert brk.get_attribute("data-comm-error") == "true"
    assert "COMM ERROR" in brk.inner_text()
    row = brk.locator("tr[data-point=ch1_current]")
    assert row.get_attribute("data-quality") == "comm-error"
    assert "comm-error" in (row.get_attribute("class") or "")
    meter = page.locator(".device[data-device=meter]")
    assert meter.get_attribute("data-comm-error") == "false"
    alarms = page.get_by_test_id("site-alarms")
    assert alarms.locator("li[data-kind=comm_loss]").count() == 1
    assert "breaker brk does not answer" in alarms.inner_text()
    shot(page, tmp_path, "site-comm-error")


def test_operator_sends_a_command_and_sees_it_in_the_history(
    page: Any, aggregator: Aggregator
) -> None:
    login(page, aggregator, "operator", start="/ui/sites/north-01")
    panel = page.get_by_test_id("command-panel")
    panel.wait_for(state="visible")
    # The applied command from before is listed with its ack.
    past = page.locator("#command-history tr[data-action='battery.peak_shave']").first
    past.wait_for()
    assert past.get_attribute("data-status") == "applied"
    assert "bat.mode=2" in past.inner_text()

    form = page.locator("form.cmd[data-action='ac.setpoint']")
    form.get_by_label("Setpoint (°C)").fill("28.5")
    form.get_by_role("button", name="Send").click()
    result = page.get_by_test_id("cmd-result")
    result.filter(has_text="ac.setpoint sent as #").wait_for()
    command_id = result.get_attribute("data-command-id")
    row = page.locator(f"#command-history tr[data-id='{command_id}']")
    row.wait_for()
    assert row.get_attribute("data-status") in {"sent", "applied"}
    assert "setpoint_c=28.5" in row.inner_text()
    logged = aggregator.api("/api/sites/north-01/commands")["commands"]
    mine = next(c for c in logged if c["id"] == command_id)
    assert mine["action"] == "ac.setpoint" and mine["params"] == {"setpoint_c": 28.5}
    assert mine["issued_by"] == "operator-noc"

    # A bad parameter is refused by the API and the page says why.
    form = page.locator("form.cmd[data-action='site.dormant']")
    form.get_by_label("Breaker channels").fill("99")
    form.get_by_role("button", name="Send").click()
    page.get_by_test_id("cmd-result").filter(has_text="not sent").wait_for()
    assert "channels" in page.get_by_test_id("cmd-result").inner_text()


def test_viewer_has_no_command_buttons_and_the_api_refuses_it(
    page: Any, aggregator: Aggregator, tmp_path: Path
) -> None:
    login(page, aggregator, "viewer", start="/ui/sites/north-01")
    page.wait_for_selector("body[data-loaded=true]")
    page.wait_for_selector("#who[data-role=viewer]")
    page.wait_for_function("!document.getElementById('command-panel')")
    assert page.locator("form.cmd").count() == 0
    assert page.get_by_role("button", name="Send").count() == 0
    # The history is still visible to a viewer.
    assert page.locator("#command-history tbody tr").count() >= 1
    status = page.evaluate(
        """async () => {
            const r = await fetch('/api/sites/north-01/commands', {method: 'POST',
              headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('sitewatt.token'),
                        'Content-Type': 'application/json'},
              body: JSON.stringify({action: 'battery.auto', params: {}})});
            return [r.status, (await r.json()).detail];
        }"""
    )
    assert status[0] == 403 and "operator" in status[1]
    shot(page, tmp_path, "site-viewer")


def test_alarms_page_lists_active_and_history(page: Any, aggregator: Aggregator) -> None:
    login(page, aggregator, "viewer", start="/ui/alarms")
    active = page.get_by_test_id("active-alarms")
    active.locator("tbody tr").first.wait_for()
    api_active = aggregator.api("/api/alarms", active="true")["alarms"]
    assert sorted(active.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.kind)")) == (
        sorted(a["kind"] for a in api_active)
    )
    history = page.get_by_test_id("alarm-history")
    cleared = history.locator("tr[data-kind=mains_failure]")
    assert cleared.get_attribute("data-active") == "false"
    page.get_by_label("Site").fill("west-03")
    page.wait_for_function(
        "[...document.querySelectorAll('#active-alarms tbody tr')]"
        ".every(r => r.dataset.site === 'west-03')"
    )
    assert active.locator("tbody tr").count() == 1


def test_reports_page_shows_the_report_api_and_downloads_its_csv(
    page: Any, aggregator: Aggregator, tmp_path: Path
) -> None:
    login(page, aggregator, "viewer", start="/ui/reports")
    page.wait_for_selector("body[data-loaded=true]")
    t1 = aggregator.now_ms
    t0 = t1 - 7 * 86_400_000
    report = aggregator.api("/api/reports", from_=t0, to=t1)
    total = report["total"]
    cur = total["currency"]
    assert page.get_by_test_id("rep-savings").inner_text() == f"{cur} {total['savings_cost']:.2f}"
    assert page.get_by_test_id("rep-grid").inner_text() == f"{total['grid_kwh']:.1f} kWh"
    rows = page.locator("#rep-table tbody tr")
    shown = rows.evaluate_all("rs => rs.map(r => r.dataset.site)")
    assert sorted(shown) == sorted(aggregator.sites)

    # The report CSV is the API's, byte for byte.
    with page.expect_download() as info:
        page.get_by_test_id("report-csv").click()
    path = tmp_path / "report.csv"
    info.value.save_as(str(path))
    api_csv = httpx.get(
        f"{aggregator.url}/api/reports",
        params={"from": t0, "to": t1, "format": "csv"},
        headers={"Authorization": f"Bearer {aggregator.tokens['viewer']}"},
    )
    assert path.read_text() == api_csv.text
    assert info.value.suggested_filename == "report-fleet.csv"

    # Energy per day: charted and downloadable; north-01's grid energy is its rollups' mean power
    # x 0.25 h, as the API returns them.
    energy = chart(page, "energy")
    assert energy["points"], "the energy chart has points"
    with page.expect_download() as info:
        page.get_by_test_id("daily-csv").click()
    daily = tmp_path / "daily.csv"
    info.value.save_as(str(daily))
    per_day = list(csv.DictReader(io.StringIO(daily.read_text())))
    assert {r["site"] for r in per_day} == set(aggregator.sites)
    rollups = aggregator.api(
        "/api/sites/north-01/readings",
        device="meter",
        point="import_power",
        step=900,
        from_=t0,
        to=t1 + 1,
    )["rollups"]
    expected = sum(b["mean"] * 0.25 for b in rollups) / 1000
    got = sum(float(r["grid_import_kwh"]) for r in per_day if r["site"] == "north-01")
    assert got == pytest.approx(expected, abs=0.01)
    assert expected > 5  # three hours at about 3 kW

    # One site's report.
    page.get_by_label("Scope").select_option("site:east-02")
    page.wait_for_function(
        "[...document.querySelectorAll('#rep-table tbody tr')].map(r => r.dataset.site).join()"
        " === 'east-02'"
    )
    shot(page, tmp_path, "reports")


def test_fleet_savings_card_shows_the_report_total(page: Any, aggregator: Aggregator) -> None:
    login(page, aggregator, "viewer")
    card = page.locator("#savings-card")
    card.wait_for(state="visible")
    now = aggregator.now_ms
    total = aggregator.api("/api/reports", from_=now - 30 * 86_400_000, to=now)["total"]
    expected = f"{total['currency']} {total['savings_cost']:.2f}"
    page.get_by_test_id("savings").filter(has_text=expected).wait_for()


def test_narrow_window_turns_tables_into_cards(
    browser: Any, aggregator: Aggregator, tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, bypass_csp=True
    )
    try:
        page = context.new_page()
        login(page, aggregator, "operator")
        page.wait_for_selector("#fleet[data-loaded=true] tbody tr")
        display = page.eval_on_selector("#fleet tbody tr", "r => getComputedStyle(r).display")
        assert display == "block"
        label = page.eval_on_selector(
            "#fleet tbody tr td:nth-child(3)", "td => getComputedStyle(td, '::before').content"
        )
        assert label == '"Load"'
        # No horizontal scrolling of the page itself.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(page, tmp_path, "fleet-narrow")
        page.goto(f"{aggregator.url}/ui/sites/north-01")
        page.wait_for_selector(".charts[data-ready=true]")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(page, tmp_path, "site-narrow")
    finally:
        context.close()


def test_logout_forgets_the_token(page: Any, aggregator: Aggregator) -> None:
    login(page, aggregator, "viewer")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    assert page.evaluate("sessionStorage.getItem('sitewatt.token')") is None
    page.goto(f"{aggregator.url}/ui/alarms")
    page.wait_for_url("**/ui/login?next=**")
