// gpuguard web page: the GPU lane (holder, queue, counters) and the timeline.
//
// The timeline keeps one row per GPU operation (waiting -> started -> completed update the
// same row, with its wait and hold times), one row per model operation, folds the many
// embedding batches of an indexing job into one live row per job, and folds a run of
// embedding requests (each held for milliseconds) into one row that counts them.
"use strict";

const PRIORITIES = ["interactive", "normal", "background"];
const MODEL_OPERATIONS = new Set(["load", "unload", "prewarm", "rewarm"]);
const PROBLEMS = new Set(["failed", "hung", "timed_out", "rejected"]);
const ROUTINE = new Set(["waiting", "started", "completed"]); // what an embedding fold counts
const HOLDER_FIELDS = new Set(["lease_id", "operation", "model", "priority", "since", "held_s", "hung", "hung_s"]);

const timeline = {
  rows: new Map(), // key -> {key, category, data, node}
  folds: new Map(), // job name -> the key of its live fold row (where its batches go)
  jobRows: new Map(), // job id -> the key of its row
  openModel: new Map(), // model -> the key of its unfinished model row
  embedFolds: new Map(), // "operation model" -> the key of its row while it is the newest
  limit: 200,
  sequence: 0,
};

// --- the lane ---------------------------------------------------------------------------
function renderLane(gpu) {
  const snapshot = gpu.snapshot;
  if (snapshot.taken_at) state.clockOffset = snapshot.taken_at - Date.now() / 1000;
  $("lane-guard").textContent = [snapshot.guard, snapshot.policy, snapshot.scope].filter(Boolean).join(" \u00b7 ");
  const holder = $("lane-holder-value");
  const c = gpu.current || snapshot.holder;
  if (c) {
    const hung = c.hung_s !== null && c.hung_s !== undefined ? `, hung for ${seconds(c.hung_s)}` : "";
    holder.textContent = `${c.operation}${c.model ? ` \u00b7 ${c.model}` : ""} (${c.priority}, ${seconds(c.held_s)}${hung})`;
    holder.classList.remove("idle");
    holder.classList.toggle("hung", Boolean(c.hung || hung));
    $("lane-holder-extra").textContent = extraFields(c);
  } else {
    holder.textContent = "free";
    holder.classList.add("idle");
    holder.classList.remove("hung");
    $("lane-holder-extra").textContent = "";
  }
  for (const priority of PRIORITIES) {
    $(`queue-${priority}`).replaceChildren(
      ...snapshot.waiters
        .filter((w) => w.priority === priority)
        .map((w) => el("span", { class: "chip", title: `waited ${seconds(w.waited_s)}${extraFields(w, true)}` },
          `#${w.position} ${w.operation}`)),
    );
  }
  const counters = snapshot.counters || {};
  const named = ["completed", "waited", "fallbacks", "failed", "hung", "rejected"];
  $("lane-counters").replaceChildren(
    ...named.filter((name) => name in counters).map((name) => el("span", {}, `${name} `, el("b", {}, String(counters[name])))),
  );
  renderGpus(gpu);
  swimlane.sync(gpu);
}

/** Fields a newer server may add to a holder or waiter (pid, host, hung...), as "key value". */
function extraFields(info, leadingSeparator = false) {
  const known = new Set([...HOLDER_FIELDS, "effective_priority", "position", "waited_s"]);
  const parts = Object.entries(info)
    .filter(([key, value]) => !known.has(key) && value !== null && value !== undefined && value !== false && typeof value !== "object")
    .map(([key, value]) => `${key.replace(/_/g, " ")} ${value === true ? "yes" : value}`);
  if (!parts.length) return "";
  return `${leadingSeparator ? " \u00b7 " : ""}${parts.join(" \u00b7 ")}`;
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

// --- the timeline -----------------------------------------------------------------------
function isJobOperation(event) {
  return event.priority === "background" || state.jobNames.has(event.operation);
}

function categoryOf(operation) {
  if (operation === "chat") return "chat";
  if (MODEL_OPERATIONS.has(operation)) return "model";
  if (operation.startsWith("embed")) return "embed";
  return "job";
}

function upsertRow(key, category, update) {
  let row = timeline.rows.get(key);
  if (!row) {
    row = { key, category, data: {}, node: el("li", { "data-key": key }) };
    timeline.rows.set(key, row);
    $("timeline").prepend(row.node);
    while (timeline.rows.size > timeline.limit) {
      const [oldest] = timeline.rows.keys();
      timeline.rows.get(oldest).node.remove();
      timeline.rows.delete(oldest);
    }
  }
  update(row.data);
  drawRow(row);
  return row;
}

function onGpuEvent(event) {
  swimlane.add(event);
  if (isJobOperation(event)) {
    foldBatch(event);
    return;
  }
  const category = categoryOf(event.operation);
  if (category === "embed" && event.operation !== "embed-load" && ROUTINE.has(event.status)) {
    foldEmbedding(event);
    return;
  }
  const key = event.lease_id ? `lease-${leaseKey(event.guard, event)}` : `gpu-${++timeline.sequence}`;
  upsertRow(key, category, (d) => {
    d.first = d.first || event.timestamp;
    d.operation = event.operation;
    d.model = event.model || d.model;
    d.status = event.status;
    d.waited = event.waited_s || d.waited || 0;
    d.held = event.held_s || d.held || 0;
    d.holder = event.status === "waiting" ? event.holder : d.holder;
    d.detail = event.detail || d.detail;
    d.position = event.position;
  });
}

/** Embedding requests in a row (nothing else in between) share one row: how many, how long. */
function foldEmbedding(event) {
  const name = `${event.operation} ${event.model || ""}`;
  let key = timeline.embedFolds.get(name);
  if (!key || $("timeline").firstElementChild?.dataset.key !== key) {
    key = `embeds-${++timeline.sequence}`;
    timeline.embedFolds.set(name, key);
  }
  upsertRow(key, "embed", (d) => {
    d.first = d.first || event.timestamp;
    d.operation = event.operation;
    d.model = event.model || d.model;
    d.status = event.status;
    d.requests = (d.requests || 0) + (event.status === "started" ? 1 : 0);
    d.heldAll = (d.heldAll || 0) + (event.status === "completed" ? event.held_s || 0 : 0);
    d.waitedAll = (d.waitedAll || 0) + (event.status === "started" ? event.waited_s || 0 : 0);
  });
}

function foldKey(name) {
  let key = timeline.folds.get(name);
  if (!key) {
    key = `job-${name}-${++timeline.sequence}`;
    timeline.folds.set(name, key);
  }
  return key;
}

function foldBatch(event) {
  upsertRow(foldKey(event.operation), "job", (d) => {
    d.job = event.operation;
    d.first = d.first || event.timestamp;
    d.last = event.timestamp;
    d.gpu = (d.gpu || 0) + (event.status === "started" ? 1 : 0);
    d.fallbacks = (d.fallbacks || 0) + (event.status === "fallback" ? 1 : 0);
    d.cpu = Math.max(d.cpu || 0, d.fallbacks);
    d.waited = (d.waited || 0) + (event.status === "started" ? event.waited_s || 0 : 0);
    d.problems = (d.problems || 0) + (PROBLEMS.has(event.status) ? 1 : 0);
    d.status = d.status || "running";
  });
}

/** A job event or view: the job's fold row starts, follows its status, ends with the result. */
function onJobForTimeline(job, status) {
  const name = job.job;
  const id = jobId(job);
  if (!name || !id) return;
  state.jobNames.add(name);
  const running = status === "running";
  let key = timeline.jobRows.get(id);
  if (!key) {
    // Batches that arrived before a running job's first event already opened a fold: adopt
    // it. A queued job has no batches yet: the fold is the running one's.
    const live = timeline.folds.get(name);
    key = running && live && !timeline.rows.get(live).data.jobId ? live : `job-${id}`;
    timeline.jobRows.set(id, key);
  }
  const finished = FINISHED.includes(status);
  // Only a running job's batches fold into its row (one job of a name runs at a time).
  if (running) timeline.folds.set(name, key);
  upsertRow(key, "job", (d) => {
    d.job = name;
    d.jobId = id;
    d.first = d.first || job.started_at || job.timestamp;
    // Its time runs from when it began to run, not from when it was queued.
    if (running && !d.ran) {
      const wasQueued = d.status === "queued";
      d.ran = (wasQueued ? job.timestamp : job.started_at || job.timestamp) || serverNow();
    }
    d.source = job.source || d.source;
    if (!FINISHED.includes(d.status)) d.status = status;
    if (finished) d.end = d.end || job.finished_at || job.timestamp || serverNow();
    const result = job.result;
    if (result && typeof result === "object" && "gpu_batches" in result) {
      Object.assign(d, { gpu: result.gpu_batches, cpu: result.cpu_batches, fallbacks: result.fallback_batches });
    }
  });
  if (finished && timeline.folds.get(name) === key) timeline.folds.delete(name);
}

/** A model event: one row per operation on a model, from its first word to its last. */
function onModelForTimeline(event) {
  let key = timeline.openModel.get(event.model);
  if (!key) {
    key = `model-${++timeline.sequence}`;
    timeline.openModel.set(event.model, key);
  }
  let finished = false;
  upsertRow(key, "model", (d) => {
    d.first = d.first || event.timestamp;
    d.began = d.began || event.status;
    d.operation = `model ${event.model}`;
    d.status = event.status;
    d.detail = event.detail || d.detail;
    // A prewarm loads, then warms: it ends at "ready"; a plain load ends at "loaded".
    finished = ["ready", "unloaded", "failed"].includes(event.status) ||
      (event.status === "loaded" && d.began !== "prewarming");
    if (finished) d.end = event.timestamp;
  });
  if (finished) timeline.openModel.delete(event.model);
}

function drawRow(row) {
  const d = row.data;
  const status = d.status || "started";
  let what;
  const facts = [];
  if (row.category === "job" && d.job) {
    what = `${d.job}${d.source ? ` \u00b7 ${d.source}` : ""}`;
    facts.push(`${d.gpu || 0} GPU batch${d.gpu === 1 ? "" : "es"}`);
    facts.push(`${d.cpu || 0} on CPU`);
    facts.push(`${d.fallbacks || 0} fallback${d.fallbacks === 1 ? "" : "s"}`);
    if (status !== "queued") {
      const end = d.end || (status === "running" ? serverNow() : d.last || d.first);
      facts.push(seconds(Math.max(0, end - (d.ran || d.first))));
    }
  } else if (d.requests !== undefined) {
    what = `${d.operation}${d.model ? ` \u00b7 ${d.model}` : ""}`;
    facts.push(`${d.requests} request${d.requests === 1 ? "" : "s"}`);
    if (d.waitedAll >= 0.05) facts.push(`waited ${seconds(d.waitedAll)} in all`);
    facts.push(`held ${seconds(d.heldAll)} in all`);
  } else {
    what = `${d.operation}${d.model ? ` \u00b7 ${d.model}` : ""}`;
    if (status === "fallback") what += " \u2192 CPU";
    if (status === "waiting") facts.push(`#${d.position || "?"}${d.holder ? `, held by ${d.holder}` : ""}`);
    // An uncontended grant "waits" microseconds: only a real wait is worth a word.
    if (d.waited >= 0.05) facts.push(`waited ${seconds(d.waited)}`);
    if (d.held) facts.push(`held ${seconds(d.held)}`);
    if (d.end && !d.held) facts.push(seconds(d.end - d.first));
  }
  row.node.className = `cat-${row.category} st-${status}${PROBLEMS.has(status) || d.problems ? " problem" : ""}`;
  row.node.title = d.detail || "";
  row.node.replaceChildren(
    el("span", { class: "time" }, clockTime(d.first || serverNow())),
    el("span", { class: `badge ${status}` }, status.replace("_", " ")),
    el("span", { class: "what" }, what, facts.length ? el("span", { class: "facts" }, facts.join(" \u00b7 ")) : ""),
  );
  applyFilter(row);
}

function applyFilter(row) {
  const wanted = $("timeline-filter").value;
  const problem = row.node.classList.contains("problem");
  row.node.hidden = Boolean(wanted) && !(wanted === "problem" ? problem : row.category === wanted);
}

function refilterTimeline() {
  for (const row of timeline.rows.values()) applyFilter(row);
}

/** Redraw the rows still running, so that their elapsed time moves. */
function tickTimeline() {
  for (const row of timeline.rows.values()) if (row.data.status === "running") drawRow(row);
}

function clearTimeline() {
  timeline.rows.clear();
  timeline.folds.clear();
  timeline.jobRows.clear();
  timeline.openModel.clear();
  timeline.embedFolds.clear();
  $("timeline").replaceChildren();
}
