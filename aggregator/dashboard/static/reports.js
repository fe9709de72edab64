/* Reports page: the aggregator's energy / cost / CO2 report (GET /api/reports: savings against the
   no-action baseline, grid energy by tariff period, per site) with its CSV, and a chart of energy
   per day from the 15-minute rollups (grid import, telecom DC load) with its own CSV. */
"use strict";
(() => {
  const { api, el, fmtNum } = SW;
  const scopeSel = document.getElementById("rep-site");
  const daysSel = document.getElementById("rep-days");
  let daily = [];
  let range = { from: 0, to: 0 };

  const STEP_S = 900;
  const HOURS = STEP_S / 3600;
  const PERIODS = ["critical_peak", "peak", "flat", "valley"];

  function scopeQuery() {
    const v = scopeSel.value;
    if (v.startsWith("site:")) return { site: v.slice(5) };
    if (v.startsWith("group:")) return { group: v.slice(6) };
    return {};
  }

  /* ---------- the report API ---------- */

  const money = (v, cur) => (v === null || v === undefined ? "–" : `${cur || ""} ${Number(v).toFixed(2)}`.trim());
  const kwh = (v) => (v === null || v === undefined ? "–" : `${fmtNum(Number(v), 1)} kWh`);

  function stat(label, value, id, cls) {
    return el("div", { class: `card stat ${cls || ""}` }, el("span", { class: "label" }, label),
      el("span", { class: "value", "data-testid": id }, value));
  }

  function renderReport(rep) {
    const t = rep.total || {};
    const cur = t.currency;
    document.getElementById("rep-cards").replaceChildren(
      stat("Saved", money(t.savings_cost, cur), "rep-savings", t.savings_cost > 0 ? "good" : ""),
      stat("Energy saved", kwh(t.savings_kwh), "rep-savings-kwh"),
      stat("CO₂ avoided", t.savings_kgco2 === undefined ? "–" : `${fmtNum(Number(t.savings_kgco2), 1)} kg`, "rep-co2"),
      stat("Grid import", kwh(t.grid_kwh), "rep-grid"),
      stat("Cost", money(t.cost, cur), "rep-cost"),
      stat("Moved from peak", kwh(t.moved_kwh), "rep-moved"),
      stat("Dormant hours", t.dormant_hours === undefined ? "–" : fmtNum(Number(t.dormant_hours), 1), "rep-dormant"),
      stat("Site energy ratio", t.site_energy_ratio ? fmtNum(Number(t.site_energy_ratio), 2) : "–", "rep-ratio"),
      stat("Reserve violations", String(t.reserve_violations ?? "–"), "rep-violations", t.reserve_violations ? "bad" : ""),
    );
    // Grid energy by tariff period.
    const parts = PERIODS.map((p) => [p, Number(t[`grid_kwh_${p}`] || 0)]);
    const sum = parts.reduce((a, [, v]) => a + v, 0);
    document.getElementById("periods").classList.toggle("hidden", !(sum > 0));
    const bar = document.getElementById("period-bar");
    bar.setAttribute("aria-label", parts.map(([p, v]) => `${p.replace("_", " ")} ${v.toFixed(1)} kWh`).join(", "));
    bar.replaceChildren(...parts.filter(([, v]) => v > 0).map(([p, v]) => el("span", { class: p, style: `width:${(100 * v) / sum}%`, title: `${p}: ${v.toFixed(2)} kWh` })));
    document.getElementById("period-legend").replaceChildren(...parts.flatMap(([p, v]) => [
      el("span", { class: `sw b-${p}` }), `${p.replace("_", " ")} ${v.toFixed(1)} kWh (${sum ? ((100 * v) / sum).toFixed(0) : 0} %)`]));
    // Sites left out of the report, and why (e.g. no tariff to price them with).
    const problems = Object.entries(rep.problems || {});
    document.getElementById("rep-problems").replaceChildren(...problems.map(([site, why]) =>
      el("li", { class: "sev-warning-b", dataset: { site } }, el("strong", {}, site), ` left out: ${why}`)));
    // Per site.
    const cols = [["Site", (s) => s.site], ["Grid import (kWh)", (s) => fmtNum(s.grid_kwh, 2), "num"],
      ["Cost", (s) => money(s.cost, s.currency), "num"], ["Saved", (s) => money(s.savings_cost, s.currency), "num"],
      ["Saved (kWh)", (s) => fmtNum(s.savings_kwh, 2), "num"], ["CO₂ avoided (kg)", (s) => fmtNum(s.savings_kgco2, 2), "num"],
      ["Moved from peak (kWh)", (s) => fmtNum(s.moved_kwh, 2), "num"], ["Dormant (h)", (s) => fmtNum(s.dormant_hours, 1), "num"],
      ["Energy ratio", (s) => (s.site_energy_ratio ? fmtNum(s.site_energy_ratio, 2) : "–"), "num"],
      ["Reserve violations", (s) => String(s.reserve_violations), "num"]];
    document.querySelector("#rep-table thead").replaceChildren(el("tr", {}, ...cols.map(([h, , c]) => el("th", { scope: "col", class: c }, h))));
    document.querySelector("#rep-table tbody").replaceChildren(...(rep.sites || []).map((s) => el("tr", { dataset: { site: s.site } },
      ...cols.map(([h, f, c]) => SW.td(h, f(s), c)))));
    document.getElementById("rep-source").textContent =
      `${rep.name}: ${SW.fmtTime(rep.from)} – ${SW.fmtTime(rep.to)}; baseline = the same load with no shifting and no dormancy; ${t.emission_factor || ""}.`;
  }

  /* ---------- energy per day from the rollups ---------- */

  function dayOf(ms, tz) {
    try {
      return new Date(ms).toLocaleDateString("sv-SE", { timeZone: tz });
    } catch (_) {
      return new Date(ms).toISOString().slice(0, 10);
    }
  }

  async function rollups(site, device, point, from, to) {
    const q = new URLSearchParams({ device, point, from: String(from), to: String(to), step: String(STEP_S), limit: "10000" });
    const r = await api(`/api/sites/${encodeURIComponent(site)}/readings?${q}`);
    return r.rollups.map((b) => [b.bucket_ms, b.mean]);
  }

  async function siteDays(site, from, to) {
    const detail = await api(`/api/sites/${encodeURIComponent(site)}`);
    const has = (d, p) => d.points.some((x) => x.point === p);
    const meters = detail.devices.filter((d) => has(d, "import_power")).map((d) => d.device);
    const rects = detail.devices.filter((d) => has(d, "load_current") && has(d, "dc_voltage")).map((d) => d.device);
    const days = new Map();
    const add = (ms, key, v) => {
      const day = dayOf(ms, detail.tz);
      const rec = days.get(day) || { site, day, grid_kwh: 0, load_kwh: 0 };
      rec[key] += v;
      days.set(day, rec);
    };
    for (const m of meters) {
      for (const [t, w] of await rollups(site, m, "import_power", from, to)) add(t, "grid_kwh", (w * HOURS) / 1000);
    }
    for (const r of rects) {
      const [i, v] = await Promise.all([rollups(site, r, "load_current", from, to), rollups(site, r, "dc_voltage", from, to)]);
      const volts = new Map(v);
      for (const [t, amps] of i) if (volts.has(t)) add(t, "load_kwh", (Math.abs(amps * volts.get(t)) * HOURS) / 1000);
    }
    return [...days.values()];
  }

  function renderDaily(rows) {
    const byDay = new Map();
    for (const r of rows) {
      const d = byDay.get(r.day) || { day: r.day, grid_kwh: 0, load_kwh: 0 };
      d.grid_kwh += r.grid_kwh;
      d.load_kwh += r.load_kwh;
      byDay.set(r.day, d);
    }
    const days = [...byDay.values()].sort((a, b) => a.day.localeCompare(b.day));
    const pts = (key) => days.map((d) => [Date.parse(`${d.day}T12:00:00Z`), Number(d[key].toFixed(3))]);
    // One point per day at noon (UTC, so the axis's label is the date itself).
    const from = days.length ? Date.parse(`${days[0].day}T00:00:00Z`) : range.from;
    const to = days.length ? Date.parse(`${days[days.length - 1].day}T23:59:59Z`) : range.to;
    SWCharts.draw("energy", document.getElementById("chart-energy"), {
      daily: true, tz: "UTC",
      points: pts("grid_kwh"), label: "grid import kWh", color: "#b45309", unit: "kWh", from_ms: from, to_ms: to,
      extra: [{ label: "DC load kWh", color: "#0b5cad", points: pts("load_kwh") }],
    });
  }

  /* ---------- refresh ---------- */

  function fillScopes(sites) {
    const keep = scopeSel.value || (SW.params.get("site") ? `site:${SW.params.get("site")}` : "");
    const regions = [...new Set(sites.map((s) => s.region).filter(Boolean))].sort();
    scopeSel.replaceChildren(el("option", { value: "" }, "Whole fleet"),
      ...regions.map((r) => el("option", { value: `group:${r}` }, `Region ${r}`)),
      ...sites.map((s) => el("option", { value: `site:${s.site}` }, s.name && s.name !== s.site ? `${s.site} · ${s.name}` : s.site)));
    scopeSel.value = keep;
    if (scopeSel.value !== keep) scopeSel.value = "";
  }

  async function refresh() {
    const [sites, now] = await Promise.all([api("/api/sites"), SW.serverNow()]);
    fillScopes(sites);
    range = { to: now, from: now - Number(daysSel.value) * 86400e3 };
    const q = new URLSearchParams({ from: String(range.from), to: String(range.to), ...scopeQuery() });
    const reportP = api(`/api/reports?${q}`).then(renderReport).catch((e) => {
      document.getElementById("rep-source").textContent = `No report: ${e.detail || e.message}`;
    });
    const sc = scopeQuery();
    const chosen = sc.site ? sites.filter((s) => s.site === sc.site) : sc.group ? sites.filter((s) => s.region === sc.group) : sites;
    const dailyP = Promise.all(chosen.map((s) => siteDays(s.site, range.from, range.to + 1))).then((per) => {
      daily = per.flat().sort((a, b) => a.site.localeCompare(b.site) || a.day.localeCompare(b.day));
      renderDaily(daily);
    });
    await Promise.all([reportP, dailyP]);
    document.body.dataset.loaded = "true";
  }

  const poller = SW.poll(refresh, Math.max(SW.POLL_MS, 30000));
  scopeSel.addEventListener("change", () => poller.now());
  daysSel.addEventListener("change", () => poller.now());

  document.getElementById("rep-csv").addEventListener("click", async () => {
    const q = new URLSearchParams({ from: String(range.from), to: String(range.to), format: "csv", ...scopeQuery() });
    const res = await api(`/api/reports?${q}`, { raw: true });
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
    SW.download(name ? name[1] : "report.csv", await res.text());
  });
  document.getElementById("daily-csv").addEventListener("click", () => {
    const header = ["site", "day", "grid_import_kwh", "dc_load_kwh", "energy_ratio"];
    const body = daily.map((r) => [r.site, r.day, r.grid_kwh.toFixed(3), r.load_kwh.toFixed(3), r.load_kwh > 0 ? (r.grid_kwh / r.load_kwh).toFixed(3) : ""]);
    const scope = scopeSel.value.replace(/^(site|group):/, "") || "fleet";
    SW.download(`sitewatt-daily-${scope}-${daysSel.value}d.csv`, SW.csv([header, ...body]));
  });
})();
