/* Site page: key points, charts over tariff bands and dormant windows, devices, alarms, commands. */
"use strict";
(() => {
  const { api, el, td, fmtW, fmtPct, fmtNum, fmtTime, fmtAgo } = SW;
  const site = document.body.dataset.site;
  const base = `/api/sites/${encodeURIComponent(site)}`;
  let detail = null;
  let tz = undefined;
  let nowMs = Date.now();

  /* ---------- header, key points, alarms, devices ---------- */

  function renderHeader(d) {
    document.getElementById("site-title").textContent = d.name && d.name !== d.site ? `${d.site} · ${d.name}` : d.site;
    const on = document.getElementById("site-online");
    on.textContent = d.online ? "online" : "offline";
    on.className = `badge ${d.online ? "online" : "offline"}`;
    const mode = document.getElementById("site-mode");
    mode.textContent = d.mode;
    mode.className = `badge mode mode-${d.mode}`;
    const meta = [d.region && `region ${d.region}`, d.tariff && `tariff ${d.tariff}`, `time zone ${d.tz}`,
      d.state && d.state.version && `agent ${d.state.version}`].filter(Boolean);
    document.getElementById("site-meta").textContent = meta.join(" · ");
    document.getElementById("k-load").textContent = fmtW(d.key_points.load_w);
    document.getElementById("k-grid").textContent = fmtW(d.key_points.grid_import_w);
    document.getElementById("k-soc").textContent = fmtPct(d.key_points.soc);
    const t = d.key_points.room_temp_c;
    document.getElementById("k-temp").textContent = t === null || t === undefined ? "–" : `${t.toFixed(1)} °C`;
    const seen = document.getElementById("k-seen");
    seen.textContent = fmtAgo(d.last_seen_ms, nowMs);
    seen.title = fmtTime(d.last_seen_ms, tz);
  }

  function renderAlarms(alarms) {
    const ul = document.getElementById("site-alarms");
    ul.replaceChildren(...alarms.map((a) => el("li", { class: `sev-${a.severity}-b`, dataset: { kind: a.kind, id: String(a.id) } },
      el("span", { class: `sev sev-${a.severity}` }, a.severity), " ",
      el("strong", {}, a.kind), a.device ? ` · ${a.device}${a.point ? `.${a.point}` : ""}` : "",
      " — ", a.message, " ", el("span", { class: "muted" }, `since ${fmtTime(a.raised_ms, tz)}`))));
    document.getElementById("alarm-count").textContent = alarms.length ? String(alarms.length) : "";
    document.getElementById("no-alarms").classList.toggle("hidden", alarms.length > 0);
  }

  /* Devices fold away (a smart breaker alone has dozens of points); what the user opened or
     closed stays so across refreshes. Small devices and any with comm errors start open. */
  const deviceOpen = new Map();
  function renderDevices(devices) {
    const box = document.getElementById("devices");
    box.replaceChildren(...devices.map((dev) => {
      const bad = dev.points.filter((p) => p.quality === "comm-error").length;
      const rows = dev.points.map((p) => el("tr", { class: p.quality === "comm-error" ? "comm-error" : null, dataset: { point: p.point, quality: p.quality } },
        td("Point", p.point),
        td("Value", fmtNum(p.value, 2), "num"),
        td("Quality", el("span", { class: `q-${p.quality}` }, p.quality)),
        td("Time", el("span", { title: fmtTime(p.t_ms, tz) }, fmtAgo(p.t_ms, nowMs)))));
      const open = deviceOpen.has(dev.device) ? deviceOpen.get(dev.device) : bad > 0 || dev.points.length <= 12;
      const details = el("details", { class: "card device", open, dataset: { device: dev.device, commError: String(bad > 0) } },
        el("summary", {}, el("span", { class: "dev-name" }, dev.device),
          el("span", { class: "muted" }, ` ${dev.points.length} point${dev.points.length === 1 ? "" : "s"}`),
          bad ? el("span", { class: "q-comm-error", title: `${bad} point(s) with comm-error quality` }, `COMM ERROR (${bad})`) : null),
        el("div", { class: "table-wrap" }, el("table", { class: "data responsive" },
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Point"), el("th", { scope: "col", class: "num" }, "Value"), el("th", { scope: "col" }, "Quality"), el("th", { scope: "col" }, "Time"))),
          el("tbody", {}, rows))));
      details.addEventListener("toggle", () => deviceOpen.set(dev.device, details.open));
      return details;
    }));
  }

  /* ---------- commands ---------- */

  function paramsText(p) {
    const entries = Object.entries(p || {});
    return entries.length ? entries.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : v}`).join(" ") : "–";
  }

  function renderCommands(page) {
    const tbody = document.querySelector("#command-history tbody");
    if (!page.commands.length) {
      tbody.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "8", class: "muted" }, "No command sent to this site yet.")));
      return;
    }
    tbody.replaceChildren(...page.commands.map((c) => el("tr", { dataset: { id: c.id, status: c.status, action: c.action } },
      td("Seq", String(c.seq), "num"),
      td("Action", c.action),
      td("Params", paramsText(c.params), "wrap"),
      td("By", c.issued_by),
      td("Issued", fmtTime(c.issued_ms, tz)),
      td("Status", el("span", { class: `st-${c.status}` }, c.status)),
      td("Ack", c.ack_ms ? `${fmtTime(c.ack_ms, tz)}${c.rtt_ms !== null && c.rtt_ms !== undefined ? ` (${Math.round(c.rtt_ms)} ms)` : ""}` : "–"),
      td("Read-back / reason", c.reason ? c.reason : c.readback ? paramsText(c.readback) : "–", "wrap"))));
  }

  function formParams(form) {
    const action = form.dataset.action;
    const v = (name) => form.elements[name];
    const num = (name) => Number(v(name).value);
    const bool = (name) => v(name).type === "checkbox" ? v(name).checked : v(name).value === "true";
    switch (action) {
      case "battery.peak_shave": return { discharge_limit_w: num("discharge_limit_w") };
      case "battery.charge": return { charge_limit_w: num("charge_limit_w"), target_soc: num("target_soc") };
      case "site.dormant": return {
        channels: v("channels").value.split(/[\s,]+/).filter(Boolean).map(Number),
        rectifier_eco: bool("rectifier_eco"),
        ac_offset_c: num("ac_offset_c"),
      };
      case "ac.setpoint": return { setpoint_c: num("setpoint_c") };
      case "breaker.set": return { channel: num("channel"), closed: bool("closed") };
      case "rectifier.eco": return { enabled: bool("enabled") };
      default: return {};
    }
  }

  function setupCommands(role) {
    const panel = document.getElementById("command-panel");
    if (!SW.allows(role, "operator")) {
      panel.remove(); // not merely hidden: a viewer's page has no command controls at all
      return;
    }
    panel.classList.remove("hidden");
    const result = document.getElementById("cmd-result");
    for (const form of panel.querySelectorAll("form.cmd")) {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const button = form.querySelector("button[type=submit]");
        button.disabled = true;
        const action = form.dataset.action;
        result.className = "";
        result.textContent = `Sending ${action}…`;
        try {
          const lease = Number(document.getElementById("lease").value) || 900;
          const c = await api(`${base}/commands`, { method: "POST", body: { action, params: formParams(form), lease_s: lease } });
          result.textContent = `${action} sent as #${c.seq}: ${c.status}`;
          result.dataset.commandId = c.id;
          await refreshCommands();
        } catch (e) {
          result.className = "error";
          result.textContent = `${action} not sent: ${e.detail || e.message}`;
        } finally {
          button.disabled = false;
        }
      });
    }
  }

  /* ---------- charts ---------- */

  function rangeS() {
    return Number(document.querySelector('input[name="range"]:checked').value);
  }

  const numeric = (p) => typeof p[1] === "number" && Number.isFinite(p[1]);

  async function readings(device, point, from, to) {
    const span = to - from;
    const step = span > 6 * 3600e3 ? (span > 2 * 86400e3 ? 3600 : 900) : null;
    const out = [];
    let offset = 0;
    for (let page = 0; page < 5; page += 1) {
      const q = new URLSearchParams({ device, point, from: String(from), to: String(to), limit: "10000", offset: String(offset) });
      if (step) q.set("step", String(step));
      const r = await api(`${base}/readings?${q}`);
      if (step) out.push(...r.rollups.map((b) => [b.bucket_ms, b.mean]));
      else out.push(...r.readings.map((x) => [x.t_ms, typeof x.value === "boolean" ? Number(x.value) : x.value]));
      if (r.next_offset === null || r.next_offset === undefined) break;
      offset = r.next_offset;
    }
    return out.filter(numeric).sort((a, b) => a[0] - b[0]);
  }

  function devicesWith(...points) {
    return (detail.devices || []).filter((d) => points.every((p) => d.points.some((x) => x.point === p))).map((d) => d.device);
  }

  async function sumOver(devices, f) {
    const per = await Promise.all(devices.map(f));
    const nonEmpty = per.filter((s) => s.length);
    if (!nonEmpty.length) return [];
    if (nonEmpty.length === 1) return nonEmpty[0];
    return SWCharts.combine(nonEmpty, (vals) => vals.reduce((a, b) => a + b, 0));
  }

  async function product(device, a, b, from, to) {
    const [x, y] = await Promise.all([readings(device, a, from, to), readings(device, b, from, to)]);
    return x.length && y.length ? SWCharts.combine([x, y], ([p, q]) => p * q) : [];
  }

  let chartsBusy = false;
  async function refreshCharts() {
    if (!detail || chartsBusy) return;
    chartsBusy = true;
    try {
      const to = nowMs + 1;
      const from = to - rangeS() * 1000;
      const bandsP = api(`/ui/data/sites/${encodeURIComponent(site)}/bands?from=${from}&to=${to}`).catch(() => null);
      const loadP = sumOver(devicesWith("load_current", "dc_voltage"), (d) => product(d, "load_current", "dc_voltage", from, to)
        .then((s) => s.map(([t, w]) => [t, Math.abs(w)])));
      const gridP = sumOver(devicesWith("import_power"), (d) => readings(d, "import_power", from, to));
      const socDevices = devicesWith("soc");
      const socP = Promise.all(socDevices.map((d) => readings(d, "soc", from, to))).then((per) => {
        const nonEmpty = per.filter((s) => s.length);
        if (nonEmpty.length <= 1) return nonEmpty[0] || [];
        return SWCharts.combine(nonEmpty, (v) => v.reduce((a, b) => a + b, 0) / v.length);
      });
      const batP = sumOver(devicesWith("voltage", "current", "soc"), (d) => product(d, "voltage", "current", from, to));
      const [bands, load, grid, soc, bat] = await Promise.all([bandsP, loadP, gridP, socP, batP]);
      const common = { tz, from_ms: from, to_ms: to, tariff: bands ? bands.tariff_bands : [], dormant: bands ? bands.dormant : [] };
      const tn = document.getElementById("tariff-name");
      tn.textContent = bands && bands.tariff ? `(tariff ${bands.tariff}${bands.tariff_known ? "" : ": unknown here, no bands"})` : "(no tariff set)";
      SWCharts.draw("load", document.getElementById("chart-load"), { ...common, points: load, label: "load", unit: "W", color: "#0b5cad" });
      SWCharts.draw("grid", document.getElementById("chart-grid"), { ...common, points: grid, label: "grid import", unit: "W", color: "#b45309" });
      SWCharts.draw("soc", document.getElementById("chart-soc"), { ...common, points: soc, label: "SOC", unit: "%", color: "#18794e", yRange: [0, 100] });
      SWCharts.draw("battery", document.getElementById("chart-battery"), { ...common, points: bat, label: "battery power", unit: "W", color: "#6b3fa0" });
      document.querySelector(".charts").dataset.ready = "true";
    } finally {
      chartsBusy = false;
    }
  }

  /* ---------- polling ---------- */

  async function refreshCommands() {
    renderCommands(await api(`${base}/commands?limit=50`));
  }

  async function refreshDetail() {
    const [d, now] = await Promise.all([api(base), SW.serverNow()]);
    detail = d;
    nowMs = now;
    tz = d.tz;
    renderHeader(d);
    renderAlarms(d.alarms || []);
    renderDevices(d.devices || []);
    await refreshCommands();
    document.body.dataset.loaded = "true";
  }

  let ticks = 0;
  SW.poll(async () => {
    await refreshDetail();
    // Charts cost more requests: every other detail refresh (and at once on the first).
    if (ticks % 2 === 0) await refreshCharts();
    ticks += 1;
  });
  for (const r of document.querySelectorAll('input[name="range"]')) r.addEventListener("change", () => refreshCharts());
  SW.me().then((who) => setupCommands(who.role)).catch(() => setupCommands("viewer"));
})();
