// gpuguard web page: shared state and helpers. No build step, no CDN.
// The other scripts (chat, lane, swimlane, panels, start) use these globals.
// Every text from the server goes into the page through textContent, never as HTML.
"use strict";

const state = {
  token: localStorage.getItem("gpuguard-token") || "",
  tokenRefused: false, // the user cancelled the token prompt: ask no more until asked to
  jobs: new Map(),
  laneRefresh: null,
  clockOffset: 0, // server time minus this browser's time, in seconds
  jobNames: new Set(["schema-refresh", "rag-indexing"]), // their GPU batches fold into one row
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined && child !== "") node.append(child);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

/** Now, on the server's clock (seconds since the epoch). */
function serverNow() {
  return Date.now() / 1000 + state.clockOffset;
}

/** "0.4 s", "12 s", "3 min 05 s". */
function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  if (value < 10) return `${value.toFixed(1)} s`;
  if (value < 60) return `${Math.round(value)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${String(Math.round(value % 60)).padStart(2, "0")} s`;
}

/** "1.2 GB", "350 MB"; "" when unknown. */
function bytes(value) {
  if (!value) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let size = value;
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return `${size >= 10 || unit === 0 ? Math.round(size) : size.toFixed(1)} ${units[unit]}`;
}

function clockTime(timestamp) {
  return new Date(timestamp * 1000).toLocaleTimeString([], { hour12: false });
}

// --- HTTP -------------------------------------------------------------------------------
function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}

async function api(path, options = {}) {
  const init = { ...options, headers: headers(options.headers || {}) };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const used = state.token;
  const response = await fetch(path, init);
  // Another request may have asked for the token meanwhile: retry with it, never ask twice.
  if (response.status === 401 && (state.token !== used || askToken())) return api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

/**
 * Ask once for the server's bearer token. Cancel means "not now": no request asks again
 * until the user clicks the connection badge, and the page says what it cannot show.
 */
function askToken() {
  if (state.tokenRefused) return false;
  const token = window.prompt(
    "This server needs its token: open the link `gpuguard serve` printed, or paste the token here:",
  );
  if (!token) {
    state.tokenRefused = true;
    showTokenNeeded();
    return false;
  }
  keepToken(token);
  return true;
}

function showTokenNeeded() {
  $("conn").classList.remove("live");
  $("conn-label").textContent = "token needed (click)";
  const holder = $("lane-holder-value");
  holder.textContent = "unknown: this server needs its token";
  holder.classList.remove("idle");
}

/** The badge's click after a Cancel: ask again, and start over with the token. */
function retryToken() {
  if (!state.tokenRefused) return;
  state.tokenRefused = false;
  if (askToken()) window.location.reload();
}

function keepToken(token) {
  state.token = token;
  localStorage.setItem("gpuguard-token", token); // per origin: this server's port only
}

/** The one-time link `gpuguard serve` prints (#login=CODE): exchanged once for the token. */
async function redeemLoginLink() {
  const match = /^#login=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  if (!match) return;
  // Out of the address bar and history first: the code works once, and only here.
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  const response = await fetch("/auth/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: match[1] }),
  });
  if (response.ok) keepToken((await response.json()).token);
}

/** The JSON payloads of an OpenAI-style SSE response body. */
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}
