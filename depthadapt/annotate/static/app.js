"use strict";
// The annotation page. Every action (click or key) runs through one queue, in order, against the state the
// previous actions left; the server's answer is the truth: the sample in progress is derived from the stored pairs.

const RELATION_COLOR = { 1: "#4fd1ff", 0: "#ffffff", "-1": "#ff9f43" };  // farther, equal, closer than the anchor
const ANCHOR_COLOR = "#ffe14d";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  session: null,    // /api/session
  index: 0,         // image shown
  record: null,     // /api/labels/{index}: pairs, skipped, height, width, progress
  anchor: null,     // {y, x} of the sample in progress
  first: null,      // {y, x, relation} of its first point (relation to the anchor: 1 farther, 0 equal)
  mode: "point",    // what the next click does: "point", "equal" or "anchor"
  overlay: false,
  scale: 1,
  queue: Promise.resolve(),
  pending: 0,
};
window.annotator = state;

const $ = (id) => document.getElementById(id);

class Notice extends Error {}  // a refused action: say why, nothing to resynchronise

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`);
  return data;
}

function setSaved(kind, text) {
  const saved = $("saved");
  saved.className = kind;
  saved.textContent = text;
}

function enqueue(action) {
  state.pending += 1;
  setSaved("busy", "saving…");
  state.queue = state.queue.then(action).then(
    () => { if (--state.pending === 0 && $("saved").className === "busy") setSaved("ok", "saved"); },
    async (error) => {
      state.pending -= 1;
      if (error instanceof Notice) {
        setSaved("notice", error.message);
        return;
      }
      setSaved("error", `not saved: ${error.message}`);
      await go(state.index).catch(() => {});  // show what the file holds
    },
  );
  return state.queue;
}

function proposeAnchor() {
  const { height, width } = state.record;
  const pick = (size) => Math.min(size - 1, Math.floor(size * (0.05 + 0.9 * Math.random())));
  state.anchor = { y: pick(height), x: pick(width) };
}

function show(record) {
  state.record = record;
  const pairs = record.pairs;
  if (pairs.length % 3 === 1) {  // a sample in progress: anchor and first point are its stored pair
    const last = pairs[pairs.length - 1];
    state.anchor = { y: last[0], x: last[1] };
    state.first = { y: last[2], x: last[3], relation: -last[4] };
  } else {
    state.first = null;
    if (!state.anchor) proposeAnchor();
  }
  render();
}

function isDone(record) {
  return record.skipped || record.pairs.length >= 3 * state.session.pairs_per_image;
}

function nextUnfinished(from) {
  const done = state.record.progress.done;
  for (let step = 1; step <= done.length; step++) {
    const index = (from + step) % done.length;
    if (!done[index]) return index;
  }
  return null;
}

async function go(index) {
  const count = state.session.images.length;
  index = Math.max(0, Math.min(count - 1, index));
  const record = await api(`/api/labels/${index}`);
  const photo = $("photo");
  if (index !== state.index || !photo.complete || !photo.naturalWidth || !photo.src) {
    await new Promise((resolve, reject) => {
      photo.onload = resolve;
      photo.onerror = () => reject(new Error(`cannot load image ${record.image}`));
      photo.src = `/api/image/${index}.png`;
    });
  }
  state.index = index;
  state.anchor = null;
  state.mode = "point";
  history.replaceState(null, "", `#${index + 1}`);
  const depth = $("depth");
  depth.hidden = !(state.overlay && record.depth);
  if (record.depth) depth.src = `/api/depth/${index}.png`;
  show(record);
}

async function advance() {
  const next = nextUnfinished(state.index);
  if (next !== null) await go(next);
}

async function place(y, x, mode) {
  const { index, anchor, first } = state;
  if (mode === "anchor") {
    if (first) throw new Notice("finish or undo this sample before moving its anchor");
    state.anchor = { y, x };
    render();
    return;
  }
  if (!first) {
    const relation = mode === "equal" ? 0 : 1;
    show(await api(`/api/labels/${index}/pairs`, { pairs: [[anchor.y, anchor.x, y, x, -relation]] }));
    return;
  }
  const relation = mode === "equal" ? 0 : -1;
  const pairs = [[anchor.y, anchor.x, y, x, -relation], [first.y, first.x, y, x, Math.sign(first.relation - relation)]];
  const record = await api(`/api/labels/${index}/pairs`, { pairs });
  state.anchor = null;  // the sample is complete: propose the next anchor
  show(record);
  if (isDone(record)) await advance();
}

async function undo() {
  const pairs = state.record.pairs;
  if (!pairs.length) throw new Notice("nothing to undo on this image");
  const rows = pairs.slice(pairs.length - (pairs.length % 3 === 0 ? 2 : 1));
  const record = await api(`/api/labels/${state.index}/undo`, { pairs: rows });
  state.anchor = { y: rows[0][0], x: rows[0][1] };
  show(record);
}

async function skip() {
  const record = await api(`/api/labels/${state.index}/skip`, { skipped: !state.record.skipped });
  show(record);
  if (record.skipped) await advance();
}

async function newAnchor() {
  if (state.first) throw new Notice("finish or undo this sample before choosing another anchor");
  proposeAnchor();
  render();
}

function fit() {
  const { height, width } = state.record;
  const viewport = $("viewport");
  state.scale = Math.min((viewport.clientWidth - 16) / width, (viewport.clientHeight - 16) / height);
  const photo = $("photo");
  photo.style.width = `${width * state.scale}px`;
  photo.style.height = `${height * state.scale}px`;
  $("marks").setAttribute("viewBox", `0 0 ${width} ${height}`);
}

function mark(svg, point, color, radius) {
  const circle = document.createElementNS(SVG, "circle");
  circle.setAttribute("cx", point.x + 0.5);
  circle.setAttribute("cy", point.y + 0.5);
  circle.setAttribute("r", radius / state.scale);
  circle.setAttribute("fill", color);
  circle.setAttribute("stroke", "#000");
  circle.setAttribute("stroke-width", 2);
  circle.setAttribute("vector-effect", "non-scaling-stroke");
  svg.appendChild(circle);
}

function line(svg, a, b, color, dashed) {
  const element = document.createElementNS(SVG, "line");
  for (const [key, value] of [["x1", a.x + 0.5], ["y1", a.y + 0.5], ["x2", b.x + 0.5], ["y2", b.y + 0.5]]) {
    element.setAttribute(key, value);
  }
  element.setAttribute("stroke", color);
  element.setAttribute("stroke-width", 2);
  element.setAttribute("vector-effect", "non-scaling-stroke");
  if (dashed) element.setAttribute("stroke-dasharray", "6 4");
  svg.appendChild(element);
}

function drawMarks() {
  const svg = $("marks");
  svg.replaceChildren();
  state.record.pairs.forEach((row, i) => {
    if (i % 3 === 2) return;  // the far-close pair of a sample follows from its two anchor pairs
    const anchor = { y: row[0], x: row[1] }, point = { y: row[2], x: row[3] };
    line(svg, anchor, point, "rgba(255,255,255,0.6)", false);
    mark(svg, anchor, ANCHOR_COLOR, 4);
    mark(svg, point, RELATION_COLOR[-row[4]], 5);
  });
  if (state.first) {
    line(svg, state.anchor, state.first, "#fff", true);
    mark(svg, state.first, RELATION_COLOR[state.first.relation], 8);
  }
  if (state.anchor) {
    mark(svg, state.anchor, ANCHOR_COLOR, 9);
    mark(svg, state.anchor, "#000", 2.5);
  }
}

function render() {
  const { record, session } = state;
  const count = session.images.length;
  const perImage = session.pairs_per_image;
  const samples = Math.floor(record.pairs.length / 3);
  const doneImages = record.progress.done.filter(Boolean).length;
  $("progress").textContent = `Image ${state.index + 1} of ${count} · ${record.image} · sample `
    + `${Math.min(samples + 1, perImage)} of ${perImage} · ${record.pairs.length} pairs · `
    + `${doneImages} of ${count} images done`;
  const instruction = $("instruction");
  const [kind, text] = state.mode === "anchor" ? ["anchor", "Click to place the anchor (yellow)"]
    : record.skipped ? ["done", "Skipped: S un-skips it, → goes on"]
    : state.mode === "equal" ? ["equal", "Click a point at the SAME depth as the anchor (yellow)"]
    : isDone(record) && !state.first ? ["done", `Done: ${samples} samples. → for the next image, or click for more`]
    : state.first ? ["close", "Click a point CLOSER to the camera than the anchor (yellow)"]
    : ["far", "Click a point FARTHER from the camera than the anchor (yellow)"];
  instruction.className = kind;
  instruction.textContent = text;
  fit();
  drawMarks();
}

function pixel(event) {
  const rect = $("marks").getBoundingClientRect();
  const { height, width } = state.record;
  const clamp = (value, size) => Math.max(0, Math.min(size - 1, Math.floor(value)));
  return {
    y: clamp((event.clientY - rect.top) / rect.height * height, height),
    x: clamp((event.clientX - rect.left) / rect.width * width, width),
  };
}

function toggleOverlay() {
  if (!state.session.depth_overlay || !state.record.depth) {
    setSaved("notice", "no depth map for this image (start the server with --depth-dir)");
    return;
  }
  state.overlay = !state.overlay;
  $("depth").hidden = !state.overlay;
}

function onKey(event) {
  if (event.key.toLowerCase() === "z" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    enqueue(undo);
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || !state.record) return;
  const toggle = (mode) => { state.mode = state.mode === mode ? "point" : mode; render(); };
  const actions = {
    e: () => toggle("equal"),
    a: () => toggle("anchor"),
    escape: () => toggle("point"),
    n: () => enqueue(newAnchor),
    u: () => enqueue(undo),
    backspace: () => enqueue(undo),
    s: () => enqueue(skip),
    arrowright: () => enqueue(() => go(state.index + 1)),
    arrowleft: () => enqueue(() => go(state.index - 1)),
    g: () => enqueue(() => go(state.record.progress.first_unfinished ?? state.index)),
    o: toggleOverlay,
    h: () => $("help").classList.toggle("hidden"),
    "?": () => $("help").classList.toggle("hidden"),
  };
  const action = actions[event.key.toLowerCase()];
  if (action) {
    event.preventDefault();
    action();
  }
}

async function start() {
  state.session = await api("/api/session");
  const unreadable = Object.entries(state.session.unreadable);
  if (unreadable.length) {
    $("unreadable").innerHTML = "<h2>Left out: unreadable</h2>";
    for (const [name, reason] of unreadable) {
      const item = document.createElement("div");
      item.textContent = `${name}: ${reason}`;
      $("unreadable").appendChild(item);
    }
  }
  const fromHash = /^#(\d+)$/.exec(location.hash);
  const first = state.session.progress.first_unfinished;
  await go(fromHash ? Number(fromHash[1]) - 1 : first ?? 0);
  if (!fromHash && first === null) setSaved("ok", "all images are done");
  $("marks").addEventListener("click", (event) => {
    const mode = event.shiftKey ? "anchor" : state.mode;
    const { y, x } = pixel(event);
    state.mode = "point";
    enqueue(() => place(y, x, mode));
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => state.record && render());
}

start().catch((error) => setSaved("error", error.message));
