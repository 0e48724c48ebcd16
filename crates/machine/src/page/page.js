// The machine's page: polls /status every second and draws it; StopAll and sign-in are
// gRPC-web calls to this machine, as any web app makes them. Everything from the machine is
// put in the page as text, never as markup.
"use strict";

const TOKEN = "tether-token";
const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN);
}

function authHeaders() {
  const t = token();
  return t ? { authorization: "Bearer " + t } : {};
}

// --- protobuf and gRPC-web, just enough for two calls -----------------------------------

function varint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

function field(number, bytes) {
  return [...varint((number << 3) | 2), ...varint(bytes.length), ...bytes];
}

function str(number, s) {
  return field(number, [...new TextEncoder().encode(s)]);
}

function frame(message) {
  const n = message.length;
  return new Uint8Array([0, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255, ...message]);
}

// Calls `path` with `message` (bytes); resolves to {status, message, body} where body is the
// first response message's bytes.
async function grpcWeb(path, message) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...authHeaders() },
    body: frame(message),
  });
  let status = res.headers.get("grpc-status");
  let text = res.headers.get("grpc-message") || "";
  const data = new Uint8Array(await res.arrayBuffer());
  let body = null;
  for (let at = 0; at + 5 <= data.length; ) {
    const flag = data[at];
    const n = ((data[at + 1] << 24) | (data[at + 2] << 16) | (data[at + 3] << 8) | data[at + 4]) >>> 0;
    const payload = data.subarray(at + 5, at + 5 + n);
    at += 5 + n;
    if (flag & 0x80) {
      for (const line of new TextDecoder().decode(payload).split("\r\n")) {
        const i = line.indexOf(":");
        if (i < 0) continue;
        const key = line.slice(0, i).trim().toLowerCase();
        const value = line.slice(i + 1).trim();
        if (key === "grpc-status") status = value;
        if (key === "grpc-message") text = decodeURIComponent(value);
      }
    } else if (body === null) {
      body = payload;
    }
  }
  if (status === null) status = res.ok ? "2" : String(res.status);
  return { status: Number(status), message: text, body };
}

// The first length-delimited field `number` of a message, as text.
function readString(bytes, number) {
  let at = 0;
  const read = () => {
    let n = 0, shift = 0, b;
    do {
      b = bytes[at++];
      n += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return n;
  };
  while (at < bytes.length) {
    const key = read();
    const wire = key & 7;
    if (wire === 2) {
      const n = read();
      if (key >>> 3 === number) return new TextDecoder().decode(bytes.subarray(at, at + n));
      at += n;
    } else if (wire === 0) read();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else return null;
  }
  return null;
}

// --- drawing ----------------------------------------------------------------------------

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  return Math.floor(ms / 3600000) + " h " + Math.round((ms % 3600000) / 60000) + " min";
}

function fill(table, rows, empty) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...rows);
  $(table).hidden = rows.length === 0;
  if (empty) $(empty).hidden = rows.length !== 0;
}

function summary(status) {
  return Object.entries(status)
    .map(([k, v]) => k + " " + (typeof v === "number" ? +v.toFixed(3) : JSON.stringify(v)))
    .join(", ");
}

function draw(s) {
  const m = s.machine;
  $("machine-name").textContent = m.name;
  document.title = m.name + " — Tether";
  $("machine-facts").textContent =
    "Tether " + m.version + (m.revision ? " · config " + m.revision : "") +
    " · up " + duration(m.uptime_ms) + " · heartbeat window " + duration(m.heartbeat_window_ms) +
    " · " + (m.auth ? "API keys required" : "open (no API keys)") +
    " · stop on disconnect " + (m.stop_on_disconnect ? "on" : "off");
  const conns = $("connections");
  conns.replaceChildren();
  for (const [transport, n] of Object.entries(s.connections)) {
    const span = el("span", transport + " " + n);
    span.dataset.transport = transport;
    span.dataset.open = n;
    conns.append(span);
  }
  $("session-count").textContent = "(" + s.sessions.length + ")";
  fill("sessions", s.sessions.map((x) => row([
    el("td", x.id, "mono"), x.owner, x.peer, duration(x.age_ms),
    x.heartbeat_age_ms === null ? "none yet" : duration(x.heartbeat_age_ms) + " ago",
    duration(x.expires_in_ms), x.resources.join(", ") || "—",
  ], { "data-session-id": x.id })), "no-sessions");
  fill("commanders", s.commanders.map((c) => row([
    "#" + c.connection, c.transport, c.resources.join(", "),
  ])), "no-commanders");
  fill("resources", s.resources.map((r) => {
    const moving = r.moving === true ? el("td", "moving", "moving") : el("td", r.moving === false ? "at rest" : r.moving === null ? "—" : r.moving);
    return row([el("td", r.name, "mono"), moving, summary(r.status)], { "data-resource": r.name, "data-moving": String(r.moving) });
  }));
  fill("expiries", s.expiries.map((e) => row([
    new Date(e.expired_at_ms).toLocaleTimeString(), el("td", e.session, "mono"), e.owner, e.peer,
    duration(e.noticed_late_ms),
    e.stop_late_ms === null ? (e.stopped.length ? "stopping…" : "—") : duration(e.stop_late_ms) + (e.stop_failed ? " (a stop failed)" : ""),
    e.stopped.join(", ") || "nothing",
  ], { "data-session-id": e.session })), "no-expiries");
}

function live(ok, text) {
  const b = $("live");
  b.textContent = text;
  b.className = "badge " + (ok ? "live" : "down");
  document.body.dataset.live = String(ok);
}

async function poll() {
  try {
    const res = await fetch("/status", { headers: authHeaders(), cache: "no-store" });
    const grpc = res.headers.get("grpc-status");
    if (grpc === "16") {
      sessionStorage.removeItem(TOKEN);
      $("login").hidden = false;
      $("content").hidden = true;
      live(false, "sign in");
    } else if (res.status === 421) {
      live(false, "not answering to this name: open the machine by its address or configured name");
    } else if (!res.ok || grpc !== null) {
      live(false, "error " + (grpc !== null ? "grpc-status " + grpc : res.status));
    } else {
      $("login").hidden = true;
      $("content").hidden = false;
      draw(await res.json());
      live(true, "live");
    }
  } catch (e) {
    live(false, "machine not answering");
  }
  setTimeout(poll, 1000);
}

$("stop-all").addEventListener("click", async () => {
  const button = $("stop-all");
  button.disabled = true;
  $("stop-all-result").textContent = "stopping…";
  try {
    const r = await grpcWeb("/viam.robot.v1.RobotService/StopAll", []);
    $("stop-all-result").textContent = r.status === 0 ? "stopped everything" : "failed: " + (r.message || "status " + r.status);
  } catch (e) {
    $("stop-all-result").textContent = "failed: " + e;
  }
  button.disabled = false;
});

$("sign-in").addEventListener("click", async () => {
  const request = [...str(1, $("key-id").value), ...field(2, [...str(1, "api-key"), ...str(2, $("key").value)])];
  try {
    sessionStorage.removeItem(TOKEN);
    const r = await grpcWeb("/proto.rpc.v1.AuthService/Authenticate", request);
    const t = r.status === 0 && r.body ? readString(r.body, 1) : null;
    if (t) {
      sessionStorage.setItem(TOKEN, t);
      $("login-result").textContent = "";
      $("key").value = "";
    } else {
      $("login-result").textContent = "refused: " + (r.message || "status " + r.status);
    }
  } catch (e) {
    $("login-result").textContent = "failed: " + e;
  }
});

poll();
