/* Sign in: check the token against /api/me, keep it, go where the user was headed. */
"use strict";
(() => {
  const form = document.getElementById("login-form");
  const err = document.getElementById("login-error");
  const next = SW.params.get("next");
  const safeNext = next && next.startsWith(`${SW.UI}/`) && !next.startsWith("//") ? next : `${SW.UI}/`;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const value = document.getElementById("token").value.trim();
    const remember = document.getElementById("remember").checked;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const res = await fetch("/api/me", { headers: { Authorization: `Bearer ${value}` } });
      if (res.status === 401) throw new Error("This token is unknown or revoked.");
      if (!res.ok) throw new Error(`The aggregator answered ${res.status}.`);
      SW.setToken(value, remember);
      location.assign(safeNext);
    } catch (e) {
      err.textContent = e.message || String(e);
    } finally {
      button.disabled = false;
    }
  });
  document.getElementById("token").focus();
})();
