/* sitewatt dashboard: what every page shares. The token lives in sessionStorage (or localStorage
   when "remember" was ticked) and goes out as `Authorization: Bearer` on every API call. */
"use strict";

const SW = (() => {
  const UI = document.body.dataset.ui || "/ui";
  const KEY = "sitewatt.token";
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(500, Number(params.get("poll")) || 5000);

  function token() {
    return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
  }
  function setToken(value, remember) {
    sessionStorage.setItem(KEY, value);
    if (remember) localStorage.setItem(KEY, value);
    else localStorage.removeItem(KEY);
  }
  function clearToken() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  }
  function toLogin() {
    const next = location.pathname + location.search;
    location.replace(`${UI}/login?next=${encodeURIComponent(next)}`);
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  /* Fetch JSON from the API with the bearer token. A 401 sends the user to the login page. */
  async function api(path, { method = "GET", body, raw = false } = {}) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (res.status === 401 && document.body.dataset.page !== "login") {
      clearToken();
      toLogin();
      throw new ApiError(401, "signed out");
    }
    if (!res.ok) {
      let detail = res.statusText;
      try {
        const j = await res.json();
        detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
      } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, detail);
    }
    return raw ? res : res.json();
  }

  /* --- formatting --- */
  function fmtW(w) {
    if (w === null || w === undefined || Number.isNaN(w)) return "–";
    const a = Math.abs(w);
    if (a >= 1e6) return `${(w / 1e6).toFixed(2)} MW`;
    if (a >= 1e3) return `${(w / 1e3).toFixed(2)} kW`;
    return `${Math.round(w)} W`;
  }
  function fmtNum(v, digits = 1) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (Number.isInteger(v)) return String(v);
    return Number(v).toFixed(digits);
  }
  function fmtPct(v) {
    return v === null || v === undefined ? "–" : `${Number(v).toFixed(0)} %`;
  }
  function fmtTime(ms, tz) {
    if (ms === null || ms === undefined) return "–";
    const opts = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hour12: false };
    try {
      return new Date(ms).toLocaleString("sv-SE", tz ? { ...opts, timeZone: tz } : opts);
    } catch (_) {
      return new Date(ms).toLocaleString("sv-SE", opts);
    }
  }
  function fmtAgo(ms, nowMs) {
    if (ms === null || ms === undefined) return "never";
    const s = Math.max(0, Math.round((nowMs - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
    return `${(s / 86400).toFixed(1)} d ago`;
  }

  /* el("td", {class: "num", dataset: {label: "Load"}}, "3 kW") */
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  /* A table cell that carries its column name for the narrow (card) layout. */
  function td(label, content, cls) {
    return el("td", { class: cls, dataset: { label } }, content);
  }

  function showStatus(text) {
    const s = document.getElementById("status");
    if (!s) return;
    s.textContent = text || "";
    s.classList.toggle("hidden", !text);
  }

  /* Server time: the aggregator may run on a simulated clock, so "now" comes from it. */
  async function serverNow() {
    try {
      const h = await api("/api/health");
      return h.time_ms;
    } catch (_) {
      return Date.now();
    }
  }

  /* Run `fn` now and every `ms` after it finishes; pause while the tab is hidden. `now()` runs
     it at once (or right after the run in flight). */
  function poll(fn, ms = POLL_MS) {
    let timer = null;
    let running = false;
    let again = false;
    let stopped = false;
    async function tick() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      if (!document.hidden) {
        try {
          await fn();
          showStatus("");
          const u = document.getElementById("updated");
          if (u) u.textContent = `Updated ${new Date().toLocaleTimeString("sv-SE")}`;
        } catch (e) {
          if (!(e instanceof ApiError && e.status === 401)) {
            showStatus(`Could not refresh: ${e.message || e}. Retrying…`);
          }
        }
      }
      running = false;
      if (stopped) return;
      if (again) {
        again = false;
        tick();
      } else {
        timer = setTimeout(tick, ms);
      }
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) tick();
    });
    tick();
    return { stop() { stopped = true; if (timer !== null) clearTimeout(timer); }, now: tick };
  }

  /* Who am I: name and role from the API; pages hide what the role may not do. */
  let mePromise = null;
  function me() {
    if (!mePromise) mePromise = api("/api/me");
    return mePromise;
  }
  const RANK = { viewer: 0, operator: 1, admin: 2 };
  function allows(role, needed) {
    return (RANK[role] ?? -1) >= RANK[needed];
  }

  /* Sortable table headers: <th data-key> with a <button>; calls onSort(key, dir). */
  function sortableHeaders(table, state, onSort) {
    for (const th of table.querySelectorAll("th[data-key]")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.key;
        state.dir = state.key === key && state.dir === "asc" ? "desc" : "asc";
        state.key = key;
        markSorted(table, state);
        onSort();
      });
    }
    markSorted(table, state);
  }
  function markSorted(table, state) {
    for (const th of table.querySelectorAll("th[data-key]")) {
      if (th.dataset.key === state.key) {
        th.setAttribute("aria-sort", state.dir === "asc" ? "ascending" : "descending");
      } else th.removeAttribute("aria-sort");
    }
  }
  function compare(a, b) {
    const na = a === null || a === undefined;
    const nb = b === null || b === undefined;
    if (na || nb) return na && nb ? 0 : na ? 1 : -1; // unknowns last
    if (typeof a === "string" || typeof b === "string") return String(a).localeCompare(String(b));
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function download(name, text, type = "text/csv") {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  function csv(rows) {
    const cell = (v) => {
      const s = v === null || v === undefined ? "" : String(v);
      return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    return rows.map((r) => r.map(cell).join(",")).join("\n") + "\n";
  }

  async function navAlarms() {
    const pill = document.getElementById("nav-alarms");
    if (!pill) return;
    const page = await api("/api/alarms?active=true&limit=1000");
    const n = page.count;
    pill.textContent = n ? String(n) : "";
    pill.classList.toggle("hidden", !n);
  }

  function init() {
    const page = document.body.dataset.page;
    if (page === "login") return;
    if (!token()) {
      toLogin();
      return;
    }
    document.getElementById("logout")?.addEventListener("click", () => {
      clearToken();
      location.assign(`${UI}/login`);
    });
    me().then((who) => {
      const w = document.getElementById("who");
      if (w) {
        w.textContent = `${who.name || "token"} (${who.role})`;
        w.dataset.role = who.role;
      }
      document.body.dataset.role = who.role;
    }).catch(() => {});
    poll(navAlarms, Math.max(POLL_MS, 5000));
  }

  init();
  return {
    UI, POLL_MS, ApiError, api, token, setToken, clearToken, fmtW, fmtNum, fmtPct, fmtTime,
    fmtAgo, el, td, showStatus, serverNow, poll, me, allows, sortableHeaders, compare,
    download, csv, params,
  };
})();
window.SW = SW;
