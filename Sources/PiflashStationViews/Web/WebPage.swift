/// The web page: one self-contained HTML document (no external files) that reads `/api/` every
/// second and renders every station's slots (a station whose heartbeat is stale greyed, with
/// the heartbeat's age) (state, host, card, a progress bar with rate and
/// ETA), the queue and the newest journal entries. Narrow screens (a phone) get one column.
/// The tab's title sums the slots up (`piflash · A flashing 42% · B verified`), so a glance at
/// the tab says enough.
enum WebPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>piflash</title>
<style>
  :root { --ok: #1a7f37; --bad: #cf222e; --busy: #0969da; --dim: #57606a; --line: #d0d7de; }
  * { box-sizing: border-box; }
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; padding: 12px; color: #1f2328; background: #f6f8fa; }
  h1 { font-size: 1.2em; margin: 0 0 8px; }
  h2 { font-size: 1.05em; margin: 16px 0 6px; }
  .meta { color: var(--dim); font-size: .85em; }
  .stations, .slots { display: grid; gap: 10px; }
  .station { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
  .station[data-stale=true] { opacity: .6; border-style: dashed; }
  .station .stale { color: var(--bad); font-weight: 600; }
  .slots { grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); margin-top: 8px; }
  .slot { border: 1px solid var(--line); border-left: 6px solid var(--dim); border-radius: 6px; padding: 8px; }
  .slot[data-state=flashing] { border-left-color: var(--busy); }
  .slot[data-state=verified] { border-left-color: var(--ok); }
  .slot[data-state=failed] { border-left-color: var(--bad); }
  .slot .name { font-weight: 600; }
  .state { font-weight: 600; }
  .slot[data-state=verified] .state, .ok { color: var(--ok); }
  .slot[data-state=failed] .state, .bad { color: var(--bad); }
  .bar { height: 10px; background: #eaeef2; border-radius: 5px; overflow: hidden; margin: 6px 0 2px; }
  .bar > div { height: 100%; background: var(--busy); width: 0; transition: width .5s; }
  .queue span { display: inline-block; margin: 2px 4px 2px 0; padding: 1px 8px; border-radius: 10px;
                background: #eaeef2; font-size: .85em; }
  .queue span[data-state=done] { background: #dafbe1; }
  .queue span[data-state=claimed] { background: #ddf4ff; }
  table { border-collapse: collapse; width: 100%; background: #fff; font-size: .9em; }
  th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
  td.fp { font-family: ui-monospace, monospace; font-size: .85em; word-break: break-all; }
  #error { color: var(--bad); }
  @media (max-width: 700px) {
    thead { display: none; }
    table, tbody, tr, td { display: block; width: 100%; }
    tr { border: 1px solid var(--line); border-radius: 6px; margin-bottom: 8px; padding: 4px; }
    td { border: 0; padding: 1px 4px; }
    td::before { content: attr(data-label) ": "; color: var(--dim); }
  }
</style>
</head>
<body>
<h1>piflash stations</h1>
<div class="meta">updated <span id="updated">never</span> <span id="error"></span></div>
<div id="stations" class="stations"></div>
<h2>Queue</h2>
<div id="queue" class="queue"><span class="meta">…</span></div>
<h2>Journal</h2>
<table id="journal">
  <thead><tr><th>#</th><th>finished</th><th>host</th><th>slot</th><th>card</th><th>reader</th><th>result</th>
  <th>write</th><th>verify</th><th>host key</th></tr></thead>
  <tbody></tbody>
</table>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? { "Authorization": "Bearer " + token } : {};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}
function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return unit === 0 ? n + " B" : value.toFixed(1) + " " + units[unit];
}
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  if (s < 60) return s.toFixed(0) + "s";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  if (m < 60) return m + "m" + String(r).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}
function ago(iso) {
  if (!iso) return "";
  return duration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000)) + " ago";
}
function rate(r) { return r ? bytes(r) + "/s" : ""; }

function slotCard(slot) {
  const card = slot.card_size ? [slot.card_model, bytes(slot.card_size), slot.card_serial ? "#" + slot.card_serial : null]
    .filter(Boolean).join(" ") : "no card";
  const node = el("div", { class: "slot", "data-slot": slot.slot, "data-state": slot.state, "data-host": slot.host },
    el("div", {}, el("span", { class: "name" }, slot.slot), " · ", el("span", { class: "state" }, slot.state),
       slot.host ? " · " : null, slot.host ? el("b", { class: "host" }, slot.host) : null),
    el("div", { class: "meta card" }, card, slot.device ? " · " + slot.device : ""));
  if (slot.state === "flashing") {
    const percent = slot.percent === null || slot.percent === undefined ? null : slot.percent;
    const bar = el("div", { class: "bar" }, el("div", { style: "width:" + (percent || 0) + "%" }));
    node.append(bar, el("div", { class: "progress" },
      [slot.phase, percent !== null ? percent + "%" : null, rate(slot.rate),
       slot.eta_seconds ? "ETA " + duration(slot.eta_seconds) : null].filter(Boolean).join(" · ")));
  } else if (slot.state === "verified") {
    node.append(el("div", { class: "ok" }, (slot.already_provisioned ? "already provisioned, not flashed again" : "verified")
      + " " + ago(slot.since)));
  } else if (slot.state === "failed") {
    node.append(el("div", { class: "bad reason" }, "failed " + ago(slot.since) + ": " + slot.reason));
  }
  return node;
}

function stationLine(station) {
  const parts = [station.local ? "this station" : station.machine];
  if (station.hosts) parts.push("hosts " + station.hosts);
  if (station.local) parts.push("running");
  else if (!station.stale) parts.push("heartbeat " + ago(station.updated_at));
  return parts.join(" · ");
}

function renderStations(stations) {
  const box = document.getElementById("stations");
  box.replaceChildren(...stations.map(station =>
    el("div", { class: "station", "data-station": station.name, "data-stale": String(station.stale) },
      el("div", {}, el("b", {}, station.name), " ", el("span", { class: "meta" }, stationLine(station)),
         station.stale ? el("span", { class: "stale" }, " · stale: no heartbeat for "
           + duration(station.heartbeat_age_seconds) + " (slots as last seen)") : null),
      station.journal_error ? el("div", { class: "bad" }, "other stations unknown: " + station.journal_error) : null,
      el("div", { class: "slots" }, ...station.slots.map(slotCard)))));
  const summary = stations.flatMap(station => station.slots.map(s =>
    (stations.length > 1 ? station.name.replace(/^station@/, "") + ":" : "") + s.slot + " " + s.state
      + (s.state === "flashing" && s.percent !== null ? " " + s.percent + "%" : "")));
  document.title = "piflash · " + summary.join(" · ");
}

function renderQueue(queue) {
  const box = document.getElementById("queue");
  box.replaceChildren(
    el("div", { class: "meta counts" }, queue.done + " done · " + queue.claimed + " claimed · " + queue.remaining + " remaining"),
    ...queue.hosts.map(h => el("span", { "data-host": h.host, "data-state": h.state, title: h.claimant || "" },
      h.host + " " + (h.state === "done" ? "✓" : h.state === "claimed" ? "…" : ""))));
}

function renderJournal(entries) {
  const body = document.querySelector("#journal tbody");
  if (entries.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "10", class: "meta" }, "no journal entries yet")));
    return;
  }
  body.replaceChildren(...entries.map(e => {
    const cell = (label, text, cls) => el("td", { "data-label": label, class: cls }, text || "");
    return el("tr", { "data-entry": e.id, "data-result": e.result, "data-host": e.host },
      cell("#", String(e.id)), cell("finished", e.finished_at ? new Date(e.finished_at).toLocaleString() : "running"),
      cell("host", e.host), cell("slot", [e.station, e.slot].filter(Boolean).join(" · ")),
      cell("card", [e.device_model, bytes(e.device_size), e.device_serial ? "#" + e.device_serial : null].filter(Boolean).join(" ")),
      cell("reader", e.reader), cell("result", e.result + (e.error ? ": " + e.error : ""), e.ok ? "ok" : "bad"),
      cell("write", rate(e.write_rate)), cell("verify", rate(e.verify_rate)),
      cell("host key", e.host_key_fingerprint, "fp"));
  }));
}

async function get(path) {
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) {
    let detail = "";
    try { detail = (await response.json()).error || ""; } catch (ignored) {}
    throw new Error(path + ": HTTP " + response.status + (detail ? " (" + detail + ")" : ""));
  }
  return response.json();
}

// Each part is drawn from its own answer: while the journal's database does not answer, the
// stations (this one live) still update and the queue and journal keep their last state.
async function refresh() {
  const parts = [["/api/stations", data => renderStations(data.stations)], ["/api/queue", renderQueue],
                 ["/api/journal?limit=20", data => renderJournal(data.entries)]];
  const results = await Promise.allSettled(parts.map(([path]) => get(path)));
  const errors = [];
  results.forEach((result, index) => {
    if (result.status === "fulfilled") parts[index][1](result.value);
    else errors.push(String(result.reason && result.reason.message || result.reason));
  });
  if (results.some(result => result.status === "fulfilled")) {
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  }
  document.getElementById("error").textContent = errors.join(" · ");
  setTimeout(refresh, 1000);
}
refresh();
</script>
</body>
</html>
"""#
}
