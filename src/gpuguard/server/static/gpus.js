// gpuguard web page: one lane per GPU (from /admin/gpu's "gpus"), each with its memory bar.
//
// A lane names the GPU's lease and policy, who holds it and how many wait; where the policy
// reads the GPU's memory, a bar shows what each holder counts (holders[].memory_bytes),
// what else the policy counts as taken (resident models, other programs: committed less
// the holders) and what is left, out of the GPU's total. An older server without "gpus"
// gets one lane from its snapshot. One GPU without memory figures (exclusive) draws none:
// the lane card above says it all.
"use strict";

function gpuSnapshots(gpu) {
  if (Array.isArray(gpu.gpus) && gpu.gpus.length) return gpu.gpus;
  return [{ gpu: gpu.snapshot.guard, ...gpu.snapshot }];
}

function memoryBar(snapshot) {
  const memory = snapshot.memory;
  if (!memory || !memory.total_bytes) return null;
  const total = memory.total_bytes;
  const parts = [];
  let held = 0;
  for (const holder of snapshot.holders || []) {
    if (!holder.memory_bytes) continue;
    held += holder.memory_bytes;
    parts.push({ kind: "holder", bytes: holder.memory_bytes, label: `${holder.operation}${holder.model ? ` ${holder.model}` : ""}` });
  }
  const committed = memory.committed_bytes;
  if (committed > held) parts.push({ kind: "other", bytes: committed - held, label: "resident models and other programs" });
  const bar = svg("svg", { class: "gpu-memory", viewBox: "0 0 1000 12", preserveAspectRatio: "none", role: "img", "aria-label": `memory of ${snapshot.gpu}` });
  let x = 0;
  for (const part of parts) {
    const width = Math.max(0, Math.min(1000 - x, (part.bytes / total) * 1000));
    const rect = svg("rect", { class: `mem-${part.kind}`, x: String(x), y: "0", width: String(width), height: "12" });
    rect.append(svg("title", {}, `${part.label}: ${bytesText(part.bytes)}`));
    bar.append(rect);
    x += width;
  }
  const free = svg("rect", { class: "mem-free", x: String(x), y: "0", width: String(1000 - x), height: "12" });
  free.append(svg("title", {}, `not committed: ${bytesText(Math.max(0, total - committed))} (the driver says ${bytesText(memory.free_bytes)} free)`));
  bar.append(free);
  return bar;
}

function bytesText(bytes) {
  const gib = bytes / 1024 ** 3;
  return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
}

function gpuLane(snapshot) {
  const holders = snapshot.holders && snapshot.holders.length ? snapshot.holders : snapshot.holder ? [snapshot.holder] : [];
  const held = holders.map((h) => `${h.operation}${h.model ? ` \u00b7 ${h.model}` : ""}`).join(", ") || "free";
  const waiting = (snapshot.waiters || []).length;
  const memory = snapshot.memory;
  const facts = [snapshot.policy];
  if (memory) facts.push(`budget ${bytesText(memory.budget_bytes)}`, `free ${bytesText(memory.free_bytes)}`);
  return el("li", { class: "gpu-lane", "data-gpu": snapshot.gpu },
    el("div", { class: "gpu-head" }, el("b", {}, snapshot.gpu), el("span", { class: "muted" }, ` ${facts.join(" \u00b7 ")}`)),
    el("div", { class: `gpu-holders${holders.length ? "" : " idle"}` }, held, waiting ? el("span", { class: "muted" }, ` \u00b7 ${waiting} waiting`) : ""),
    memoryBar(snapshot),
  );
}

/** One lane per GPU; a single GPU without memory figures is the lane card itself: none. */
function renderGpus(gpu) {
  const snapshots = gpuSnapshots(gpu);
  const worth = snapshots.length > 1 || snapshots.some((snapshot) => snapshot.memory);
  $("gpu-lanes").replaceChildren(...(worth ? snapshots.map(gpuLane) : []));
}
