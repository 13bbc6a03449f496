/**
 * The status page served at `/admin/`: one self-contained HTML document (inline CSS and script, no
 * external assets, works offline). It holds no data; its script asks for the admin token once
 * (a form, or `#token=…` in the URL), keeps it in localStorage and polls `/admin/keys` (keys and
 * their accounts: free-model use today, rests), `/admin/usage` and `/admin/requests` every 2 s.
 * Every value from the API goes into the DOM as text, never as markup.
 *
 * This is a template literal: the script inside uses no template literals and no backslashes,
 * so nothing in it is interpolated or unescaped by TypeScript.
 */
export const statusPageHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>openrouter-proxy · status</title>
<style>
:root { color-scheme: light dark; --bg: #f5f6f8; --card: #fff; --text: #1d2330; --muted: #687085; --line: #e4e7ec;
  --ok: #16784a; --ok-bg: #e2f4e9; --warn: #985700; --warn-bg: #fff0d4; --bad: #b42318; --bad-bg: #fde7e5; --accent: #3558d4; }
@media (prefers-color-scheme: dark) { :root { --bg: #13151a; --card: #1b1e25; --text: #e6e8ee; --muted: #949cae; --line: #2b3039;
  --ok: #62d497; --ok-bg: #173325; --warn: #f2b65c; --warn-bg: #3a2a10; --bad: #ff8a80; --bad-bg: #3d1a18; --accent: #8ea7ff; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 28px; padding: 14px 28px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 17px; margin: 0; } h1 span { color: var(--muted); font-weight: 400; }
#totals { display: flex; flex-wrap: wrap; gap: 6px 22px; }
.stat b { font-size: 16px; font-variant-numeric: tabular-nums; } .stat span { color: var(--muted); margin-left: 5px; font-size: 13px; }
#state { margin-left: auto; color: var(--muted); font-size: 12px; }
main { padding: 6px 28px 28px; max-width: 1400px; }
h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 18px 0 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 7px 12px; border-bottom: 1px solid var(--line); white-space: nowrap; vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
tbody tr:last-child td { border-bottom: 0; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.muted { color: var(--muted); font-size: 12px; }
.clip { max-width: 160px; overflow: hidden; text-overflow: ellipsis; }
.wrap { white-space: normal; min-width: 160px; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.active, .ok { color: var(--ok); background: var(--ok-bg); } .cooling { color: var(--warn); background: var(--warn-bg); }
.disabled, .fail { color: var(--bad); background: var(--bad-bg); }
.rest + .rest { margin-top: 4px; }
.empty { color: var(--muted); text-align: center; padding: 16px; }
#banner { margin: 14px 28px 0; padding: 10px 14px; border-radius: 8px; background: var(--bad-bg); color: var(--bad); }
.stale { opacity: .55; }
#login { max-width: 400px; margin: 14vh auto 0; padding: 24px; }
#login h2 { margin-top: 0; } #login p { margin: 0 0 14px; }
#login-form { display: flex; gap: 8px; }
input { flex: 1; padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--text); font: inherit; }
button { padding: 8px 16px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; font: inherit; font-weight: 600; cursor: pointer; }
#login-msg { margin-top: 12px; min-height: 1.4em; }
</style>
</head>
<body>
<header>
  <h1>openrouter-proxy <span>status</span></h1>
  <div id="totals" hidden></div>
  <div id="state">loading…</div>
</header>
<div id="banner" role="alert" hidden></div>
<section id="login" class="card" hidden>
  <h2>Admin token</h2>
  <p>This page reads the admin API. Enter the proxy's <b>ADMIN_TOKEN</b>; it stays in this browser.</p>
  <form id="login-form" autocomplete="off">
    <input id="token-input" type="password" placeholder="ADMIN_TOKEN" aria-label="admin token" required>
    <button type="submit">Open</button>
  </form>
  <div id="login-msg" class="muted" role="status"></div>
</section>
<main id="dash" hidden>
  <h2>Keys</h2>
  <div class="card"><table id="keys">
    <thead><tr><th>ID</th><th>Label</th><th>Account</th><th>Key</th><th>Status</th><th>Last used</th><th class="n">Success</th><th class="n">Tokens today</th></tr></thead>
    <tbody></tbody></table></div>
  <h2>Accounts</h2>
  <div class="card"><table id="accounts">
    <thead><tr><th>Account</th><th>Keys</th><th>Free requests today (UTC)</th><th>Resting</th></tr></thead>
    <tbody></tbody></table></div>
  <h2>Last requests</h2>
  <div class="card"><table id="requests">
    <thead><tr><th>Time</th><th>Request</th><th>Model</th><th>Status</th><th>Key</th><th class="n">Attempts</th><th class="n">Duration</th><th class="n">Tokens</th></tr></thead>
    <tbody></tbody></table></div>
  <h2>Totals by model · today (UTC)</h2>
  <div class="card"><table id="models">
    <thead><tr><th>Model</th><th class="n">Requests</th><th class="n">Errors</th><th class="n">Prompt</th><th class="n">Completion</th><th class="n">Total tokens</th><th class="n">Cost</th></tr></thead>
    <tbody></tbody></table></div>
</main>
<script>
(function () {
  "use strict";
  var STORE = "openrouter-proxy.admin-token";
  var REFRESH_MS = 2000;
  var base = location.pathname.replace(/[/]*$/, "/");
  var token = "";
  var skew = 0;
  var lastOk = 0;
  var timer = 0;
  var generation = 0;
  var live = [];

  function $(id) { return document.getElementById(id); }
  function stored() { try { return localStorage.getItem(STORE) || ""; } catch (e) { return token; } }
  function keep(value) {
    token = value;
    try { if (value) localStorage.setItem(STORE, value); else localStorage.removeItem(STORE); } catch (e) { /* private mode: memory only */ }
  }
  function takeFragment() {
    var match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!match) return;
    var value = match[1];
    try { value = decodeURIComponent(value); } catch (e) { /* keep it raw */ }
    history.replaceState(null, "", location.pathname + location.search);
    if (value) keep(value);
  }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function td(text, cls) { return el("td", text, cls); }
  function tr(cells) { var row = el("tr"); cells.forEach(function (cell) { row.appendChild(cell); }); return row; }
  function fill(id, rows, columns, emptyText) {
    if (rows.length === 0) { var cell = td(emptyText, "empty"); cell.colSpan = columns; rows = [tr([cell])]; }
    $(id).tBodies[0].replaceChildren.apply($(id).tBodies[0], rows);
  }
  function own(object, name) { return object && Object.prototype.hasOwnProperty.call(object, name) ? object[name] : undefined; }
  function now() { return Date.now() + skew; }
  function num(n) { return (n || 0).toLocaleString("en-US"); }
  function money(n) { return "$" + (n || 0).toFixed(n >= 1 ? 2 : 4); }
  function span(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    return h ? h + "h " + m + "m" : m ? m + "m " + s + "s" : s + "s";
  }
  function ago(iso) {
    if (!iso) return "never";
    var s = Math.round((now() - Date.parse(iso)) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }
  function elapsed(ms) { return ms >= 1000 ? (ms / 1000).toFixed(1) + " s" : ms >= 10 ? Math.round(ms) + " ms" : (ms || 0).toFixed(1) + " ms"; }
  function clock(iso) { return new Date(iso).toLocaleTimeString("en-GB", { hour12: false }); }
  function ticking(node, render) { render(); live.push(render); return node; }

  function statusCell(key) {
    var cell = td(), pill = el("span", key.status, "pill " + key.status), note = "";
    cell.appendChild(pill);
    if (key.status === "cooling" && key.cooldownUntil) {
      var until = Date.parse(key.cooldownUntil);
      ticking(pill, function () { var left = until - now(); pill.textContent = "cooling down · " + (left > 0 ? span(left) : "ending"); });
      note = key.cooldownReason || "";
    } else if (key.status === "disabled") {
      note = key.disabledReason || "no reason recorded";
    }
    if (note) { cell.className = "wrap"; cell.appendChild(el("div", note, "muted")); }
    return cell;
  }
  function keyRow(key, usage) {
    var used = td(), today = own(usage && usage.byKey, key.id);
    ticking(used, function () { used.textContent = ago(key.lastUsedAt); if (key.lastUsedAt) used.title = key.lastUsedAt; });
    var rate = td(key.requests ? Math.round((100 * key.successes) / key.requests) + "%" : "–", "n");
    if (key.requests) rate.appendChild(el("span", " " + key.successes + "/" + key.requests, "muted"));
    var account = key.account ? td(key.account, "mono") : td("unknown", "muted");
    return tr([td(key.id, "mono"), td(key.label || "–"), account, td(key.masked, "mono"), statusCell(key), used, rate, td(num(today ? today.totalTokens : 0), "n")]);
  }
  function utcTime(iso) {
    var at = new Date(iso).toISOString(), hm = at.slice(11, 16) + " UTC";
    return Date.parse(iso) - now() > 86400000 ? at.slice(0, 10) + " " + hm : hm;
  }
  function restLine(rest) {
    var what = rest.scope === "model" ? "model " + (rest.model || "?") : rest.modelClass === "all" ? "all models" : rest.modelClass + " models";
    var line = el("div", null, "rest"), head = el("span", null, "pill cooling"), until = Date.parse(rest.until);
    head.title = rest.until + " (" + rest.source + ")";
    line.appendChild(ticking(head, function () {
      var left = until - now();
      head.textContent = what + " · until " + utcTime(rest.until) + " · " + (left > 0 ? span(left) + " left" : "ending");
    }));
    line.appendChild(el("span", " — " + rest.reason, "muted"));
    return line;
  }
  function accountRow(account) {
    var unknown = account.id.indexOf("key:") === 0, name = td(unknown ? "unknown" : account.id, unknown ? "" : "mono");
    if (unknown) {
      name.appendChild(el("span", " (own)", "muted"));
      name.title = "Its account is not known yet: the key counts as an account of its own.";
    }
    var used = account.freeRequestsToday || 0, limit = account.freeLimit, free = td();
    if (typeof limit !== "number") free.append(num(used) + " ", el("span", "(limit unknown)", "muted"));
    else free.appendChild(el("span", num(used) + " of " + num(limit), used >= limit ? "pill cooling" : ""));
    var rests = td(null, "wrap"), list = account.rests || [];
    list.forEach(function (rest) { rests.appendChild(restLine(rest)); });
    if (list.length === 0) rests.appendChild(el("span", "none", "muted"));
    return tr([name, td((account.keyIds || []).join(", "), "mono"), free, rests]);
  }
  function isUnknown(account) { return account.id.indexOf("key:") === 0 ? 1 : 0; }
  function requestRow(r) {
    var status = td(), time = td(clock(r.time));
    time.title = r.time;
    var served = r.status > 0 && r.status < 400;
    status.appendChild(el("span", String(r.status || "–"), "pill " + (served ? "ok" : "fail")));
    if (r.error) { status.className = "wrap"; status.appendChild(el("div", (served ? "retried · " : "") + r.error, "muted")); }
    var id = td(r.requestId, "mono clip");
    id.title = r.requestId;
    return tr([time, id, td(r.model || "–"), status, td(r.keyId || "–", "mono"), td(r.attempts, "n"),
      td(elapsed(r.durationMs), "n"), td(r.totalTokens === null ? "–" : num(r.totalTokens), "n")]);
  }
  function modelRows(usage) {
    var byModel = (usage && usage.byModel) || {};
    return Object.keys(byModel).sort(function (a, b) { return byModel[b].requests - byModel[a].requests; }).map(function (model) {
      var t = byModel[model];
      return tr([td(model), td(num(t.requests), "n"), td(num(t.errors), "n"), td(num(t.promptTokens), "n"),
        td(num(t.completionTokens), "n"), td(num(t.totalTokens), "n"), td(money(t.cost), "n")]);
    });
  }
  function totals(usage) {
    var t = (usage && usage.totals) || {}, box = $("totals");
    var stats = [[num(t.requests), "requests today"], [num(t.errors), t.errors === 1 ? "error" : "errors"], [num(t.totalTokens), "tokens"], [money(t.cost), "cost"]];
    box.replaceChildren.apply(box, stats.map(function (s) { var d = el("div", null, "stat"); d.appendChild(el("b", s[0])); d.appendChild(el("span", s[1])); return d; }));
    box.hidden = false;
  }
  function render(keys, accounts, usage, requests) {
    live = [];
    totals(usage);
    fill("keys", keys.map(function (key) { return keyRow(key, usage); }), 8, "No keys yet: add one with openrouter-proxy add-key.");
    accounts = accounts.slice().sort(function (a, b) { return isUnknown(a) - isUnknown(b); });
    fill("accounts", accounts.map(accountRow), 4, "No accounts yet.");
    fill("requests", requests.map(requestRow), 8, "No requests yet.");
    fill("models", modelRows(usage), 7, "No usage today.");
  }

  function ask(message) {
    clearTimeout(timer);
    $("dash").hidden = true;
    $("totals").hidden = true;
    $("banner").hidden = true;
    $("login").hidden = false;
    $("state").textContent = "waiting for the admin token";
    $("login-msg").textContent = message;
    $("token-input").focus();
  }
  function problem(text) {
    $("banner").textContent = text;
    $("banner").hidden = false;
    $("dash").classList.add("stale");
    $("state").textContent = lastOk ? "last update " + clock(new Date(lastOk).toISOString()) : "no data yet";
  }
  function get(path) {
    return fetch(base + path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" }).then(function (res) {
      if (res.status === 401) throw { auth: true };
      if (res.ok) return res.json();
      return res.text().then(function (text) {
        var message = text.slice(0, 200);
        try { message = JSON.parse(text).error.message || message; } catch (e) { /* not JSON */ }
        throw { message: "GET " + base + path + " answered " + res.status + ": " + message };
      });
    });
  }
  function refresh() {
    clearTimeout(timer);
    token = token || stored();
    if (!token) { ask("Enter the token to see the keys."); return; }
    var mine = ++generation;
    Promise.all([get("keys"), get("usage"), get("requests?limit=15")]).then(function (answers) {
      if (mine !== generation) return;
      var usage = answers[1];
      if (usage && usage.until) skew = Date.parse(usage.until) - Date.now();
      lastOk = Date.now();
      $("login").hidden = true;
      $("banner").hidden = true;
      $("dash").hidden = false;
      $("dash").classList.remove("stale");
      render(answers[0].keys || [], answers[0].accounts || [], usage, answers[2].requests || []);
      $("state").textContent = "live · updated " + clock(new Date(lastOk).toISOString());
      timer = setTimeout(refresh, REFRESH_MS);
    }, function (error) {
      if (mine !== generation) return;
      if (error && error.auth) { keep(""); ask("The proxy refused that token (401). Enter ADMIN_TOKEN again."); return; }
      var since = lastOk ? " The figures below are from " + clock(new Date(lastOk).toISOString()) + "." : "";
      problem(error instanceof TypeError ? "The proxy is unreachable; retrying every 2 s." + since : String((error && error.message) || error) + since);
      timer = setTimeout(refresh, REFRESH_MS);
    });
  }

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var value = $("token-input").value.trim();
    $("token-input").value = "";
    if (!value) return;
    keep(value);
    $("login-msg").textContent = "Checking…";
    refresh();
  });
  window.addEventListener("hashchange", function () { takeFragment(); refresh(); });
  setInterval(function () { live.forEach(function (render) { render(); }); }, 1000);
  takeFragment();
  refresh();
})();
</script>
</body>
</html>
`;
