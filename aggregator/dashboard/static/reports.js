/* Reports page: energy per day from the 15-minute rollups (grid import, telecom DC load, site
   energy ratio), charted and downloadable as CSV. When the aggregator offers a report API
   (/api/reports…, the control issue), its savings are shown as well. */
"use strict";
(() => {
  const { api, el, fmtNum } = SW;
  const siteSel = document.getElementById("rep-site");
  const daysSel = document.getElementById("rep-days");
  siteSel.value = SW.params.get("site") || "";
  let rows = [];
  let sitesCache = [];

  const STEP_S = 900;
  const HOURS = STEP_S / 3600;

  async function rollups(site, device, point, from, to) {
    const q = new URLSearchParams({ device, point, from: String(from), to: String(to), step: String(STEP_S), limit: "10000" });
    const r = await api(`/api/sites/${encodeURIComponent(site)}/readings?${q}`);
    return r.rollups.map((b) => [b.bucket_ms, b.mean]);
  }

  function dayOf(ms, tz) {
    try {
      return new Date(ms).toLocaleDateString("sv-SE", { timeZone: tz });
    } catch (_) {
      return new Date(ms).toISOString().slice(0, 10);
    }
  }

  /* kWh per local day for one site: grid import (meters) and DC load (rectifiers, mean I × mean V). */
  async function siteDays(s, from, to) {
    const detail = await api(`/api/sites/${encodeURIComponent(s.site)}`);
    const has = (d, p) => d.points.some((x) => x.point === p);
    const meters = detail.devices.filter((d) => has(d, "import_power")).map((d) => d.device);
    const rects = detail.devices.filter((d) => has(d, "load_current") && has(d, "dc_voltage")).map((d) => d.device);
    const days = new Map();
    const add = (ms, key, kwh) => {
      const day = dayOf(ms, detail.tz);
      const rec = days.get(day) || { site: s.site, day, grid_kwh: 0, load_kwh: 0 };
      rec[key] += kwh;
      days.set(day, rec);
    };
    for (const m of meters) {
      for (const [t, w] of await rollups(s.site, m, "import_power", from, to)) add(t, "grid_kwh", (w * HOURS) / 1000);
    }
    for (const r of rects) {
      const [i, v] = await Promise.all([rollups(s.site, r, "load_current", from, to), rollups(s.site, r, "dc_voltage", from, to)]);
      const volts = new Map(v);
      for (const [t, amps] of i) if (volts.has(t)) add(t, "load_kwh", (Math.abs(amps * volts.get(t)) * HOURS) / 1000);
    }
    return [...days.values()];
  }

  function fillSites(list) {
    const keep = siteSel.value;
    siteSel.replaceChildren(el("option", { value: "" }, "All sites"), ...list.map((s) => el("option", { value: s.site }, s.name && s.name !== s.site ? `${s.site} · ${s.name}` : s.site)));
    siteSel.value = keep;
  }

  function render(perDay) {
    const byDay = new Map();
    for (const r of perDay) {
      const d = byDay.get(r.day) || { day: r.day, grid_kwh: 0, load_kwh: 0 };
      d.grid_kwh += r.grid_kwh;
      d.load_kwh += r.load_kwh;
      byDay.set(r.day, d);
    }
    const days = [...byDay.values()].sort((a, b) => a.day.localeCompare(b.day));
    const grid = days.reduce((a, d) => a + d.grid_kwh, 0);
    const load = days.reduce((a, d) => a + d.load_kwh, 0);
    const cards = document.getElementById("rep-cards");
    const stat = (label, value, id) => el("div", { class: "card stat" }, el("span", { class: "label" }, label), el("span", { class: "value", "data-testid": id }, value));
    cards.replaceChildren(
      stat("Grid import", `${fmtNum(grid, 1)} kWh`, "rep-grid"),
      stat("Telecom DC load", `${fmtNum(load, 1)} kWh`, "rep-load"),
      stat("Site energy ratio", load > 0 ? fmtNum(grid / load, 2) : "–", "rep-ratio"),
    );
    const thead = document.querySelector("#rep-table thead");
    thead.replaceChildren(el("tr", {}, ...["Site", "Day", "Grid import (kWh)", "DC load (kWh)", "Energy ratio"].map((h) => el("th", { scope: "col" }, h))));
    const tbody = document.querySelector("#rep-table tbody");
    rows = perDay.sort((a, b) => a.site.localeCompare(b.site) || a.day.localeCompare(b.day));
    tbody.replaceChildren(...rows.map((r) => el("tr", {},
      SW.td("Site", r.site), SW.td("Day", r.day), SW.td("Grid import (kWh)", r.grid_kwh.toFixed(2), "num"),
      SW.td("DC load (kWh)", r.load_kwh.toFixed(2), "num"), SW.td("Energy ratio", r.load_kwh > 0 ? (r.grid_kwh / r.load_kwh).toFixed(2) : "–", "num"))));
    // Chart: one point per day (at local noon of the day's first bucket is not needed: use the date).
    const pts = (key) => days.map((d) => [Date.parse(`${d.day}T12:00:00Z`), Number(d[key].toFixed(3))]);
    const from = days.length ? Date.parse(`${days[0].day}T00:00:00Z`) : Date.now() - 86400e3;
    const to = days.length ? Date.parse(`${days[days.length - 1].day}T23:59:59Z`) : Date.now();
    SWCharts.draw("energy", document.getElementById("chart-energy"), {
      points: pts("grid_kwh"), label: "grid import kWh", color: "#b45309", unit: "kWh", from_ms: from, to_ms: to,
      extra: [{ label: "DC load kWh", color: "#0b5cad", points: pts("load_kwh") }],
    });
  }

  async function refresh() {
    const [list, now] = await Promise.all([api("/api/sites"), SW.serverNow()]);
    sitesCache = list;
    fillSites(list);
    const days = Number(daysSel.value);
    const to = now + 1;
    const from = to - days * 86400e3;
    const chosen = siteSel.value ? list.filter((s) => s.site === siteSel.value) : list;
    const perDay = (await Promise.all(chosen.map((s) => siteDays(s, from, to)))).flat();
    document.getElementById("rep-source").textContent =
      `From the 15-minute rollups of the last ${days} day(s), ${chosen.length} site(s); days in each site's time zone.`;
    render(perDay);
    document.body.dataset.loaded = "true";
  }

  const poller = SW.poll(refresh, Math.max(SW.POLL_MS, 30000));
  siteSel.addEventListener("change", () => poller.now());
  daysSel.addEventListener("change", () => poller.now());
  document.getElementById("rep-csv").addEventListener("click", () => {
    const header = ["site", "day", "grid_import_kwh", "dc_load_kwh", "energy_ratio"];
    const body = rows.map((r) => [r.site, r.day, r.grid_kwh.toFixed(3), r.load_kwh.toFixed(3), r.load_kwh > 0 ? (r.grid_kwh / r.load_kwh).toFixed(3) : ""]);
    SW.download(`sitewatt-energy-${siteSel.value || "fleet"}-${daysSel.value}d.csv`, SW.csv([header, ...body]));
  });
  void sitesCache;
})();
