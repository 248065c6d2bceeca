// The service graph page: Cytoscape.js draws the document of /ui/graph.json, kept live by /ui/events
// (server-sent events, one document a second). The same numbers are in a plain table (#edges) for screen
// readers and tests. Text reaches the page through textContent only (never innerHTML).
"use strict";

const LOCK = "\u{1F512}";
let cy = null;
let selected = null;   // id of the selected edge
let latest = null;     // the last document

function fmt(v, digits) {
  return v === null || v === undefined ? "-" : Number(v).toFixed(digits);
}

function pct(share) {
  return share === null || share === undefined ? "-" : (100 * share).toFixed(1) + "%";
}

function nodeLabel(n) {
  if (!n.known && !n.workload) return `${n.app}\n(no workload)`;
  return n.version ? `${n.app}\n${n.version}` : n.app;
}

// Edges of a client towards one service: the split is shown only where there is more than one.
function splitCounts(doc) {
  const counts = {};
  for (const e of doc.edges) {
    const k = e.source + "|" + e.service;
    counts[k] = (counts[k] || 0) + 1;
  }
  return counts;
}

function edgeLabel(e, counts) {
  let text = `${fmt(e.rps, 1)} rps · ${fmt(e.error_pct, 1)}% err · p99 ${fmt(e.p99_ms, 0)} ms`;
  if (counts[e.source + "|" + e.service] > 1 || e.weight !== null) {
    text += `\n${pct(e.share)}` + (e.weight !== null ? ` (weight ${e.weight}%)` : "");
  }
  return (e.mtls ? LOCK + " " : "") + text;
}

function ensureGraph() {
  if (cy !== null) return cy;
  cy = cytoscape({
    container: document.getElementById("graph"),
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: { "label": "data(label)", "text-wrap": "wrap", "text-valign": "center",
          "text-halign": "center", "shape": "round-rectangle", "width": 90, "height": 44,
          "background-color": "#e8f0fe", "border-width": 1, "border-color": "#5b7db8", "font-size": 12 } },
      { selector: "node[?unknown]", style: { "background-color": "#eee", "border-style": "dashed" } },
      { selector: "edge", style: { "label": "data(label)", "text-wrap": "wrap", "font-size": 11,
          "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 2, "line-color": "#6a6",
          "target-arrow-color": "#6a6", "text-background-color": "#fff", "text-background-opacity": 0.85,
          "text-background-padding": 2 } },
      { selector: "edge[!mtls]", style: { "line-style": "dashed" } },  // plaintext: dashed, no lock
      { selector: "edge[?failing]", style: { "line-color": "#c33", "target-arrow-color": "#c33" } },
      { selector: "edge:selected", style: { "width": 4, "line-color": "#d90", "target-arrow-color": "#d90" } },
    ],
    layout: { name: "preset" },
  });
  cy.on("tap", "edge", (evt) => select(evt.target.id()));
  window.minimeshGraph = cy;  // for the browser test and the curious (read-only use)
  return cy;
}

// Left to right in layers: callers that nobody calls first, then what they call, and so on; each layer's
// nodes spread evenly. Deterministic (a node keeps its place across updates), and labels get room.
function layered(g) {
  const depth = {};
  const incoming = {};
  g.edges().forEach((e) => { incoming[e.target().id()] = true; });
  let layer = g.nodes().filter((n) => !incoming[n.id()]);
  for (let d = 0; layer.length > 0 && d < 20; d++) {
    const next = [];
    layer.forEach((n) => {
      if (depth[n.id()] !== undefined) return;
      depth[n.id()] = d;
      n.outgoers("node").forEach((m) => next.push(m));
    });
    layer = next;
  }
  const layers = {};
  g.nodes().forEach((n) => {
    const d = depth[n.id()] !== undefined ? depth[n.id()] : 0;  // a cycle with no entry: first layer
    (layers[d] = layers[d] || []).push(n);
  });
  for (const [d, nodes] of Object.entries(layers)) {
    nodes.sort((a, b) => a.id().localeCompare(b.id()));
    nodes.forEach((n, i) => n.position({ x: 380 * Number(d), y: 150 * (i - (nodes.length - 1) / 2) }));
  }
  g.fit(undefined, 40);
}

function render(doc) {
  latest = doc;
  const g = ensureGraph();
  const counts = splitCounts(doc);
  const nodeIds = new Set();
  let added = false;
  g.batch(() => {
    for (const n of doc.nodes) {
      nodeIds.add(n.id);
      const data = { id: n.id, label: nodeLabel(n), unknown: !n.known };
      if (g.getElementById(n.id).empty()) { g.add({ group: "nodes", data }); added = true; }
      else g.getElementById(n.id).data(data);
    }
    const edgeIds = new Set(doc.edges.map((e) => e.id));
    g.edges().forEach((el) => { if (!edgeIds.has(el.id())) el.remove(); });
    for (const e of doc.edges) {
      const data = { id: e.id, source: e.source, target: e.target, label: edgeLabel(e, counts),
                     failing: e.error_pct !== null && e.error_pct > 0, mtls: e.mtls };
      if (g.getElementById(e.id).empty()) { g.add({ group: "edges", data }); added = true; }
      else g.getElementById(e.id).data(data);
    }
    g.nodes().forEach((el) => { if (!nodeIds.has(el.id())) el.remove(); });
  });
  if (added) layered(g);
  if (selected !== null) {
    const el = g.getElementById(selected);
    if (!el.empty()) el.select();
  }
  renderTable(doc, counts);
  renderPanel();
  const when = new Date(doc.generated_at * 1000).toLocaleTimeString();
  const status = document.getElementById("status");
  status.dataset.generatedAt = String(doc.generated_at);
  status.dataset.window = String(doc.window_s);
  status.textContent =
    `live · updated ${when} · ${doc.edges.length} edges · rates over the last ${fmt(doc.window_s, 1)} s`;
  document.getElementById("window").textContent = fmt(doc.window_s, 0);
  const bad = doc.unreachable.map((u) => `${u.sidecar} (${u.address}): ${u.error}`);
  const un = document.getElementById("unreachable");
  un.textContent = bad.length ? "unreachable sidecars: " + bad.join("; ") : "";
  un.className = bad.length ? "bad" : "";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function renderTable(doc) {
  const body = document.querySelector("#edges tbody");
  const rows = [];
  for (const e of doc.edges) {
    const tr = document.createElement("tr");
    tr.dataset.edge = e.id;
    tr.dataset.source = e.source;
    tr.dataset.target = e.target;
    tr.dataset.share = e.share === null ? "" : String(e.share);
    tr.dataset.requests = String(e.requests);
    if (e.id === selected) tr.className = "selected";
    cell(tr, e.source);
    cell(tr, e.target);
    cell(tr, e.service);
    cell(tr, fmt(e.rps, 2), "num");
    cell(tr, fmt(e.error_pct, 2), "num");
    cell(tr, fmt(e.p99_ms, 1), "num");
    cell(tr, e.mtls ? LOCK + " mTLS" : "plain");
    cell(tr, pct(e.share), "num");
    cell(tr, e.weight === null ? "-" : e.weight + "%", "num");
    const td = cell(tr, "");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "details";
    button.addEventListener("click", () => select(e.id));
    td.appendChild(button);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function select(id) {
  selected = id;
  if (cy !== null) {
    cy.elements().unselect();
    const el = cy.getElementById(id);
    if (!el.empty()) el.select();
  }
  for (const tr of document.querySelectorAll("#edges tbody tr")) {
    tr.className = tr.dataset.edge === id ? "selected" : "";
  }
  renderPanel();
}

function add(parent, tag, text) {
  const el = document.createElement(tag);
  if (text !== undefined) el.textContent = text;
  parent.appendChild(el);
  return el;
}

function renderPanel() {
  if (latest === null || selected === null) return;
  const body = document.getElementById("panel-body");
  const e = latest.edges.find((x) => x.id === selected);
  if (!e) {
    body.replaceChildren();
    add(body, "p", `${selected}: no calls in the window`).className = "hint";
    return;
  }
  const route = latest.routes[e.service] || null;
  const parts = document.createDocumentFragment();
  add(parts, "h3", `${e.source} → ${e.target}`).id = "panel-title";
  const facts = add(parts, "ul");
  facts.id = "panel-facts";
  add(facts, "li", `service ${e.service}` + (e.subset ? `, subset ${e.subset}` : ""));
  add(facts, "li", `${fmt(e.rps, 2)} rps, ${fmt(e.error_pct, 2)}% errors, p50 ${fmt(e.p50_ms, 1)} ms, ` +
                   `p99 ${fmt(e.p99_ms, 1)} ms`);
  add(facts, "li", e.mtls ? `${LOCK} mutual TLS (reported by the destination)` : "not mutual TLS");
  add(facts, "li", `share of ${e.source}'s calls to ${e.service}: ${pct(e.share)}` +
                   (e.weight !== null ? `; configured weight ${e.weight}%` : ""));
  if (route) {
    add(parts, "h3", "Route");
    const r = add(parts, "ul");
    r.id = "panel-route";
    add(r, "li", route.virtual_service ? `VirtualService ${route.virtual_service}` : "no VirtualService");
    add(r, "li", "weights (" + route.weights_source + "): " +
                 (route.weights.map(([s, w]) => `${s} ${w}%`).join(", ") || "the whole service"));
    for (const h of route.http) {
      const li = add(r, "li", `${h.label}: to ${h.to}; retries: ${h.retries}; fault: ${h.fault}` +
                              (h.timeout ? `; timeout ${h.timeout}` : ""));
      if (h.match) add(li, "pre", "match: " + JSON.stringify(h.match));
    }
    add(parts, "h3", "DestinationRule");
    const d = add(parts, "ul");
    d.id = "panel-policy";
    add(d, "li", route.destination_rule ? `DestinationRule ${route.destination_rule}`
                                        : "no DestinationRule (the topology's subsets)");
    if (route.traffic_policy) add(d, "pre", "trafficPolicy: " + JSON.stringify(route.traffic_policy, null, 1));
    for (const s of route.subsets) {
      add(d, "li", `subset ${s.name}: ${JSON.stringify(s.labels)}` +
                   (s.traffic_policy ? ` trafficPolicy ${JSON.stringify(s.traffic_policy)}` : ""));
    }
  }
  body.replaceChildren(parts);
}

function connect() {
  const status = document.getElementById("status");
  fetch("/ui/graph.json", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then(render)
    .catch((err) => { status.textContent = `no snapshot yet (${err.message}); waiting for the live stream`; });
  const source = new EventSource("/ui/events");
  source.addEventListener("graph", (ev) => render(JSON.parse(ev.data)));
  source.addEventListener("failure", (ev) => { status.textContent = JSON.parse(ev.data).error; source.close(); });
  source.onerror = () => { status.textContent = "disconnected from the control plane; retrying…"; };
}

connect();
