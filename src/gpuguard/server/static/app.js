// gpuguard web page: chat, the GPU lane, models and indexing. No build step, no CDN.
"use strict";

const state = {
  token: localStorage.getItem("gpuguard-token") || "",
  jobs: new Map(),
  laneRefresh: null,
  timelineLimit: 200,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
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
  const response = await fetch(path, init);
  if (response.status === 401 && askToken()) return api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function askToken() {
  const token = window.prompt("This server needs its bearer token:");
  if (!token) return false;
  state.token = token;
  localStorage.setItem("gpuguard-token", token);
  return true;
}

// --- chat -------------------------------------------------------------------------------
function addMessage(role, text) {
  const message = el("div", { class: `msg ${role}` }, text);
  $("chat-log").append(message);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return message;
}

function showWaiting(text) {
  let notice = $("gpu-waiting");
  if (!notice) {
    notice = el("div", { class: "gpu-wait", id: "gpu-waiting" }, el("span", { class: "spinner" }), el("span", { class: "text" }));
    $("chat-log").append(notice);
  }
  notice.querySelector(".text").textContent = text;
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

function hideWaiting() {
  const notice = $("gpu-waiting");
  if (notice) notice.remove();
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  addMessage("user", text);
  let answer = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        model: $("chat-model").value,
        messages: [{ role: "user", content: text }],
        stream: true,
        retrieval: $("chat-retrieval").checked,
      }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    for await (const payload of sseData(response)) {
      if (payload.error) throw new Error(payload.error.message);
      if (payload.gpuguard && payload.gpuguard.status === "waiting") {
        showWaiting(payload.gpuguard.message);
        continue;
      }
      const delta = (payload.choices && payload.choices[0] && payload.choices[0].delta) || {};
      if (delta.content) {
        hideWaiting();
        if (!answer) answer = addMessage("assistant", "");
        answer.textContent += delta.content;
        $("chat-log").scrollTop = $("chat-log").scrollHeight;
      }
    }
    hideWaiting();
    if (!answer) addMessage("assistant", "(empty answer)");
  } catch (error) {
    hideWaiting();
    addMessage("error", `Error: ${error.message}`);
  } finally {
    $("chat-send").disabled = false;
  }
}

// Parse an OpenAI-style SSE body ("data: {...}" frames ending with "data: [DONE]").
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

// --- GPU lane ---------------------------------------------------------------------------
function renderLane(gpu) {
  const snapshot = gpu.snapshot;
  $("lane-guard").textContent = `${snapshot.guard} \u00b7 ${snapshot.policy}`;
  const holder = $("lane-holder-value");
  if (gpu.current) {
    const c = gpu.current;
    holder.textContent = `${c.operation}${c.model ? ` \u00b7 ${c.model}` : ""} (${c.priority}, ${c.held_s.toFixed(1)}s)`;
    holder.classList.remove("idle");
  } else {
    holder.textContent = "free";
    holder.classList.add("idle");
  }
  for (const priority of ["interactive", "normal", "background"]) {
    const chips = $(`queue-${priority}`);
    chips.replaceChildren(
      ...snapshot.waiters
        .filter((w) => w.priority === priority)
        .map((w) => el("span", { class: "chip", title: `waited ${w.waited_s.toFixed(1)}s` }, `#${w.position} ${w.operation}`)),
    );
  }
  const c = snapshot.counters;
  $("lane-counters").replaceChildren(
    ...[["completed", c.completed], ["waited", c.waited], ["fallbacks", c.fallbacks], ["failed", c.failed], ["hung", c.hung], ["rejected", c.rejected]]
      .map(([name, value]) => el("span", {}, `${name} `, el("b", {}, String(value)))),
  );
}

async function refreshLane() {
  try {
    renderLane(await api("/admin/gpu?recent=0"));
  } catch (error) {
    console.warn("lane", error);
  }
}

function scheduleLaneRefresh() {
  if (state.laneRefresh) return;
  state.laneRefresh = setTimeout(() => {
    state.laneRefresh = null;
    refreshLane();
  }, 60);
}

function timelineEntry(event) {
  const time = new Date(event.timestamp * 1000).toLocaleTimeString([], { hour12: false });
  let status = event.status;
  let what = event.operation || event.job || event.model;
  if (event.kind === "gpu") {
    if (event.model) what += ` \u00b7 ${event.model}`;
    if (status === "fallback") what += " \u2192 CPU";
    if (status === "waiting" && event.holder) what += ` (held by ${event.holder})`;
  } else if (event.kind === "model") {
    what = `model ${event.model}`;
  }
  const title = event.detail || "";
  return el("li", { class: `ev-${event.kind} st-${status}`, title },
    el("span", { class: "time" }, time),
    el("span", { class: `badge ${status}` }, status.replace("_", " ")),
    el("span", { class: "what" }, what));
}

function addToTimeline(event) {
  const list = $("timeline");
  list.prepend(timelineEntry(event));
  while (list.children.length > state.timelineLimit) list.lastChild.remove();
}

// --- models -----------------------------------------------------------------------------
async function refreshModels() {
  try {
    const [models, status] = await Promise.all([api("/v1/models"), api("/admin/status")]);
    const backend = status.backend;
    $("backend-status").textContent = `${backend.backend}${backend.ok ? "" : " (down)"} \u00b7 model ${status.model || "none"}${status.prewarming ? " \u00b7 prewarming" : ""}`;
    const select = $("chat-model");
    const chosen = select.value;
    select.replaceChildren(...models.data.map((m) => el("option", { value: m.id }, m.id)));
    const current = models.data.find((m) => m.gpuguard && m.gpuguard.current);
    select.value = chosen || (current ? current.id : models.data.length ? models.data[0].id : "");
    $("models-table").tBodies[0].replaceChildren(...models.data.map(modelRow));
  } catch (error) {
    $("backend-status").textContent = `unavailable: ${error.message}`;
  }
}

function modelRow(model) {
  const info = model.gpuguard || {};
  const stateText = `${info.loaded ? "loaded" : "not loaded"}${info.current ? " \u00b7 current" : ""}`;
  const action = (label, path) => el("button", {
    class: "small", type: "button",
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api(path, { json: { model: model.id } });
      } catch (error) {
        alert(error.message);
      }
      refreshModels();
    },
  }, label);
  return el("tr", { "data-model": model.id },
    el("td", {}, model.id),
    el("td", {}, el("span", { class: `badge ${info.loaded ? "loaded" : ""}` }, stateText)),
    el("td", { class: "actions" },
      action("Load", "/admin/models/load"),
      action("Unload", "/admin/models/unload"),
      action("Prewarm", "/admin/models/prewarm")));
}

// --- indexing ---------------------------------------------------------------------------
const FINISHED = ["completed", "failed", "cancelled"];

function jobId(job) { return job.id || job.job_id; }

function renderJob(job) {
  const id = jobId(job);
  const previous = state.jobs.get(id) || {};
  const merged = { ...previous, ...job };
  if (FINISHED.includes(previous.status) && !FINISHED.includes(job.status)) {
    // A stale view (the start request's answer, or a job list) arriving after the job's
    // final event: the final state wins.
    Object.assign(merged, { status: previous.status, detail: previous.detail });
  }
  merged.done = Math.max(previous.done || 0, job.done || 0);
  state.jobs.set(id, merged);
  let item = document.querySelector(`#jobs li[data-job="${CSS.escape(id)}"]`);
  if (!item) {
    item = el("li", { "data-job": id });
    $("jobs").prepend(item);
  }
  const total = merged.total || 0;
  const done = merged.done || 0;
  const finished = merged.status === "completed";
  const percent = finished ? 100 : total ? Math.min(100, Math.round((100 * done) / total)) : 0;
  const bar = el("div", { class: `bar ${merged.status}` }, el("span"));
  bar.firstChild.style.width = `${percent}%`;
  const cancel = FINISHED.includes(merged.status) ? "" :
    el("button", { class: "small", type: "button", onclick: () => api(`/admin/jobs/${id}/cancel`, { method: "POST" }).catch((e) => alert(e.message)) }, "Cancel");
  item.replaceChildren(
    el("div", { class: "job-head" },
      el("span", {}, `${merged.kind || merged.job} `, el("span", { class: `badge ${merged.status}` }, merged.status)),
      el("span", {}, `${done}${total ? ` / ${total}` : ""} `, cancel)),
    bar,
    el("div", { class: "job-detail" }, merged.detail || merged.source || ""));
}

async function startJob(event, path, json) {
  event.preventDefault();
  $("index-error").textContent = "";
  try {
    renderJob(await api(path, { json }));
  } catch (error) {
    $("index-error").textContent = error.message;
  }
}

async function refreshJobs() {
  try {
    const body = await api("/admin/jobs");
    for (const job of [...body.jobs].reverse()) renderJob(job);
  } catch (error) {
    // No job manager on this server: the indexing panel says so on use.
  }
}

// --- live events ------------------------------------------------------------------------
function connectEvents() {
  const query = state.token ? `?history=true&token=${encodeURIComponent(state.token)}` : "?history=true";
  const source = new EventSource(`/events${query}`);
  source.addEventListener("ready", () => {
    $("conn").classList.add("live");
    $("conn-label").textContent = "live";
    $("timeline").replaceChildren();
  });
  source.addEventListener("gpu", (message) => {
    addToTimeline(JSON.parse(message.data));
    scheduleLaneRefresh();
  });
  source.addEventListener("model", (message) => {
    addToTimeline(JSON.parse(message.data));
    refreshModels();
  });
  source.addEventListener("job", (message) => {
    const event = JSON.parse(message.data);
    renderJob(event);
  });
  source.onerror = () => {
    $("conn").classList.remove("live");
    $("conn-label").textContent = "reconnecting";
  };
}

function init() {
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) sendChat(event);
  });
  $("models-refresh").addEventListener("click", refreshModels);
  $("db-form").addEventListener("submit", (e) => startJob(e, "/admin/jobs/schema-refresh", { database_url: $("db-url").value }));
  $("docs-form").addEventListener("submit", (e) => startJob(e, "/admin/jobs/rag", { path: $("docs-path").value }));
  refreshLane();
  refreshModels();
  refreshJobs();
  connectEvents();
  setInterval(refreshLane, 1000);
}

document.addEventListener("DOMContentLoaded", init);
