// gpuguard web page: the swim-lane picture of the last minutes, drawn as SVG.
//
// One lane per priority. A solid bar is a lease held (who had the GPU), a hatched bar a
// wait in the queue, a purple diamond a bulk-embedding batch that went to the CPU because
// the GPU was busy, a red bar an operation that failed, hung or timed out.
"use strict";

// The narrowest bar drawn: a hold of a few milliseconds still shows, in its own colour,
// instead of an antialiased sliver.
const MIN_BAR_PX = 4;

/** One lease of one GPU: lease ids count per guard and per process, so the GPU, the host and
 * the pid are part of the key (an event and a snapshot entry of the same lease meet on it). */
function leaseKey(guard, info) {
  return `${guard || ""}/${info.host || ""}/${info.pid ?? ""}/${info.lease_id}`;
}

const swimlane = {
  leases: new Map(), // leaseKey -> {gpu, operation, model, priority, waitFrom, from, to, status}
  marks: [], // CPU fallbacks: {t, operation}
  keepSeconds: 330,
  timer: null,
  laneHeight: 26,
  axisHeight: 18,
  labelWidth: 84,

  windowSeconds() {
    return Number($("swim-window").value) || 120;
  },

  lease(guard, info) {
    const key = leaseKey(guard, info);
    let lease = this.leases.get(key);
    if (!lease) {
      lease = { gpu: guard, operation: info.operation, priority: info.priority, status: "waiting" };
      this.leases.set(key, lease);
    }
    return lease;
  },

  /** Take in one GPU event. */
  add(event) {
    const t = event.timestamp;
    if (event.status === "fallback") {
      this.marks.push({ t, operation: event.operation });
      return;
    }
    if (!event.lease_id) return;
    const lease = this.lease(event.guard, event);
    lease.model = event.model || lease.model;
    lease.status = event.status;
    if (event.status === "waiting") {
      lease.waitFrom = lease.waitFrom || t - (event.waited_s || 0);
    } else if (event.status === "started") {
      lease.from = t;
      if (event.waited_s) lease.waitFrom = lease.waitFrom || t - event.waited_s;
    } else {
      // completed, failed, cancelled, hung, timed_out, rejected: the lease (or the wait) ends
      if (lease.from === undefined && event.held_s) lease.from = t - event.held_s;
      lease.to = t;
      if (lease.from === undefined) lease.waitTo = t;
    }
  },

  /** Fill in what the events did not show (a page opened while a GPU was held): every GPU. */
  sync(gpu) {
    for (const snapshot of gpuSnapshots(gpu)) {
      const now = snapshot.taken_at || serverNow();
      const first = gpu.current && snapshot.guard === gpu.snapshot.guard ? [gpu.current] : [];
      const holders = snapshot.holders && snapshot.holders.length ? snapshot.holders : snapshot.holder ? [snapshot.holder] : [];
      for (const holder of [...first, ...holders]) {
        const lease = this.lease(snapshot.guard, holder);
        lease.model = holder.model || lease.model;
        if (lease.from === undefined) lease.from = now - (holder.held_s || 0);
        if (holder.hung) lease.status = "hung";
      }
      for (const waiter of snapshot.waiters || []) {
        const lease = this.lease(snapshot.guard, waiter);
        if (lease.waitFrom === undefined) lease.waitFrom = now - (waiter.waited_s || 0);
      }
    }
    this.draw();
  },

  prune(now) {
    const horizon = now - this.keepSeconds;
    for (const [id, lease] of this.leases) {
      const end = lease.to ?? lease.waitTo;
      if (end !== undefined && end < horizon) this.leases.delete(id);
    }
    this.marks = this.marks.filter((mark) => mark.t >= horizon);
  },

  /** "gpu1: " before a bar's title when the leases seen name several GPUs. */
  onGpu(lease) {
    const gpus = new Set([...this.leases.values()].map((each) => each.gpu));
    return gpus.size > 1 && lease.gpu ? `${lease.gpu}: ` : "";
  },

  draw() {
    const box = $("swim");
    const width = Math.max(240, box.clientWidth || 600);
    const now = serverNow();
    this.prune(now);
    const span = this.windowSeconds();
    const left = this.labelWidth;
    const right = width - 8;
    const x = (t) => left + ((t - (now - span)) / span) * (right - left);
    const clampX = (t) => Math.min(right, Math.max(left, x(t)));
    const laneY = (priority) => this.axisHeight + Math.max(0, PRIORITIES.indexOf(priority)) * this.laneHeight;
    const height = this.axisHeight + PRIORITIES.length * this.laneHeight + 2;

    const picture = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "swim-svg" });
    picture.append(svg("defs", {},
      svg("pattern", { id: "swim-hatch", patternUnits: "userSpaceOnUse", width: 6, height: 6, patternTransform: "rotate(45)" },
        svg("rect", { width: 6, height: 6, class: "hatch-bg" }),
        svg("rect", { width: 2.5, height: 6, class: "hatch-line" }))));

    // lanes and the time axis
    PRIORITIES.forEach((priority, index) => {
      const y = laneY(priority);
      picture.append(svg("rect", { x: 0, y, width, height: this.laneHeight, class: `lane-bg ${index % 2 ? "odd" : "even"}` }));
      const label = svg("text", { x: 6, y: y + this.laneHeight / 2 + 4, class: `lane-label ${priority}` });
      label.textContent = priority;
      picture.append(label);
    });
    const step = span <= 60 ? 10 : span <= 120 ? 20 : 60;
    for (let ago = 0; ago <= span; ago += step) {
      const tx = x(now - ago);
      picture.append(svg("line", { x1: tx, x2: tx, y1: this.axisHeight - 4, y2: height, class: "tick" }));
      const label = svg("text", { x: tx, y: 11, class: "tick-label", "text-anchor": ago === 0 ? "end" : "middle" });
      label.textContent = ago === 0 ? "now" : `-${ago}s`;
      picture.append(label);
    }

    // waits (hatched), then holds (solid) on top
    for (const [id, lease] of this.leases) {
      const y = laneY(lease.priority) + 4;
      const h = this.laneHeight - 8;
      if (lease.waitFrom !== undefined) {
        const end = lease.from ?? lease.waitTo ?? lease.to ?? now;
        if (end >= now - span) {
          const x0 = clampX(lease.waitFrom);
          const w = Math.max(MIN_BAR_PX, clampX(end) - x0);
          const wait = svg("rect", { x: x0, y, width: w, height: h, rx: 3, class: "swim-wait", "data-lease": id });
          wait.append(svg("title", {}, `${this.onGpu(lease)}${lease.operation} waited ${seconds(end - lease.waitFrom)}`));
          picture.append(wait);
        }
      }
    }
    for (const [id, lease] of this.leases) {
      if (lease.from === undefined) continue;
      const end = lease.to ?? now;
      if (end < now - span) continue;
      const y = laneY(lease.priority) + 4;
      const h = this.laneHeight - 8;
      const x0 = clampX(lease.from);
      const w = Math.max(MIN_BAR_PX, clampX(end) - x0);
      const problem = PROBLEMS.has(lease.status);
      const bar = svg("rect", {
        x: x0, y, width: w, height: h, rx: 3,
        class: `swim-hold cat-${categoryOf(lease.operation)}${problem ? " problem" : ""}${lease.to === undefined ? " live" : ""}`,
        "data-lease": id,
      });
      const name = `${lease.operation}${lease.model ? ` \u00b7 ${lease.model}` : ""}`;
      bar.append(svg("title", {}, `${this.onGpu(lease)}${name}: ${lease.status}, held ${seconds(end - lease.from)}`));
      picture.append(bar);
      if (w > 46) {
        const text = svg("text", { x: x0 + 4, y: y + h / 2 + 4, class: "bar-label" });
        text.textContent = name.length * 6.2 > w - 8 ? lease.operation : name;
        if (lease.operation.length * 6.2 <= w - 8) picture.append(text);
      }
    }
    // CPU fallbacks: a diamond on the background lane at the time the batch went to the CPU
    const y = laneY("background") + this.laneHeight / 2;
    for (const mark of this.marks) {
      if (mark.t < now - span) continue;
      const mx = x(mark.t);
      const diamond = svg("polygon", { points: `${mx},${y - 6} ${mx + 5},${y} ${mx},${y + 6} ${mx - 5},${y}`, class: "swim-fallback" });
      diamond.append(svg("title", {}, `${mark.operation}: batch on the CPU (GPU busy)`));
      picture.append(diamond);
    }
    box.replaceChildren(picture);
  },

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => this.draw(), 500);
    $("swim-window").addEventListener("change", () => this.draw());
    window.addEventListener("resize", () => this.draw());
  },
};
