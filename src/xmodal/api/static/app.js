// xmodal's search page: plain JavaScript against the HTTP API (POST /search, GET /items/{id}); no build step.
"use strict";

const PAGE = 24;
const $ = (selector) => document.querySelector(selector);
// inFlight: the AbortController of the page being fetched (null when none is), so a new search cancels it
const state = { request: null, cursor: null, inFlight: null, file: null, shown: 0, likeHit: null };

function basename(path) {
  return path.split("/").pop();
}

function words(text) {
  return (text || "").toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) || [];
}

function highlighted(text, query) {
  const span = document.createElement("span");
  const wanted = new Set(words(query));
  for (const piece of (text || "").split(/([\p{L}\p{N}]+)/u)) {
    if (wanted.has(piece.toLowerCase())) {
      const mark = document.createElement("mark");
      mark.textContent = piece;
      span.append(mark);
    } else {
      span.append(piece);
    }
  }
  return span;
}

// Every filter typed, malformed ones too: the search refuses those with a message instead of dropping them.
function parseWhere(text) {
  return text.split(",").map((pair) => pair.trim()).filter((pair) => pair);
}

function checkedModalities() {
  return [...document.querySelectorAll("input[name=modality]:checked")].map((box) => box.value);
}

// The query as typed: kept so that later pages ask the same question.
function readForm(likeItem = null) {
  return {
    text: $("#query-text").value.trim(),
    not: $("#query-not").value.trim(),
    where: parseWhere($("#query-where").value),
    modalities: checkedModalities(),
    file: state.file,
    likeItem,
  };
}

function requestInit(query, cursor) {
  if (query.file) {
    const form = new FormData();
    form.append(query.file.type.startsWith("audio/") ? "audio" : "image", query.file, query.file.name);
    if (query.text) form.append("text", query.text);
    if (query.not) form.append("not", query.not);
    for (const modality of query.modalities) form.append("modalities", modality);
    for (const pair of query.where) form.append("where", pair);
    form.append("k", String(PAGE));
    form.append("explain", "true");
    if (cursor) form.append("cursor", cursor);
    return { method: "POST", body: form };
  }
  const body = { k: PAGE, explain: true, modalities: query.modalities };
  if (query.likeItem !== null) body.parts = [{ item: query.likeItem }];
  else body.text = query.text;
  if (query.not) body.not = [query.not];
  if (query.where.length) body.where = Object.fromEntries(query.where.map((pair) => pair.split(/=(.*)/s).slice(0, 2)));
  if (cursor) body.cursor = cursor;
  return { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
}

function setStatus(message, isError = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// The next page of the current search. A page of an older search that answers late is dropped: it never lands
// under the newer query, and never holds the newer search back.
async function fetchPage() {
  if (state.inFlight || !state.request) return;
  const request = state.request;
  const controller = new AbortController();
  state.inFlight = controller;
  try {
    const response = await fetch("search", { ...requestInit(request, state.cursor), signal: controller.signal });
    const payload = await response.json().catch(() => ({}));
    if (request !== state.request) return;
    if (!response.ok) {
      const detail = typeof payload.detail === "string" ? payload.detail : JSON.stringify(payload.detail || payload);
      setStatus(`${response.status}: ${detail}`, true);
      state.cursor = null;
      return;
    }
    for (const hit of payload.results) $("#results").append(card(hit, request.text));
    state.shown += payload.results.length;
    state.cursor = payload.next_cursor;
    const millis = Object.values(payload.timings || {}).reduce((a, b) => a + b, 0) * 1000;
    const unavailable = Object.keys(payload.spaces_unavailable || {});
    setStatus(
      `${state.shown} results` + (state.cursor ? " (scroll for more)" : "") +
      ` · spaces: ${payload.spaces_searched.join(", ") || "none"}` +
      (unavailable.length ? ` · unavailable: ${unavailable.join(", ")}` : "") + ` · ${millis.toFixed(0)} ms`,
    );
    showIgnored(payload.parts_ignored || {});
  } catch (error) {
    if (controller.signal.aborted || request !== state.request) return;
    setStatus(`The search failed: ${error}`, true);
  } finally {
    if (state.inFlight === controller) state.inFlight = null;
  }
}

// A new search (or a refused one) makes the page being fetched for the last one moot.
function cancelFetch() {
  if (state.inFlight) state.inFlight.abort();
  state.inFlight = null;
}

// Parts of the query the server could not use (an image while CLIP is unavailable, ...), said next to the results.
function showIgnored(ignored) {
  const notice = $("#notice");
  const lines = Object.entries(ignored).map(([part, reason]) => `${part.split("#")[0]} not used: ${reason}`);
  notice.textContent = lines.join(" · ");
  notice.hidden = lines.length === 0;
}

function startSearch(likeItem = null) {
  cancelFetch();
  const query = readForm(likeItem);
  if (!query.text && !query.file && likeItem === null) {
    setStatus("Type something, or drop an image or an audio clip.", true);
    return;
  }
  const malformed = query.where.filter((pair) => !pair.includes("=") || pair.startsWith("="));
  if (malformed.length) {
    setStatus(`Filter '${malformed[0]}' is not of the form key=value (e.g. extension=jpg).`, true);
    return;
  }
  showIgnored({});
  $("#overview").hidden = true;
  if (likeItem === null) showLike(null);
  state.request = query;
  state.cursor = null;
  state.shown = 0;
  $("#results").replaceChildren();
  setStatus("Searching…");
  fetchPage();
}

const SVG = "http://www.w3.org/2000/svg";

// The image with the OCR lines that matched drawn over it: an SVG of the image's own proportions laid on the
// picture (both fit their box the same way), corners given as fractions of the width and height.
function framed(image, boxes, width, height) {
  if (!boxes || !boxes.length || !width || !height) return image;
  const frame = document.createElement("div");
  frame.className = "frame";
  const overlay = document.createElementNS(SVG, "svg");
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.setAttribute("preserveAspectRatio", "xMidYMid meet");
  overlay.classList.add("ocr-overlay");
  for (const box of boxes) {
    const polygon = document.createElementNS(SVG, "polygon");
    polygon.setAttribute("points", box.map(([x, y]) => `${x * width},${y * height}`).join(" "));
    polygon.classList.add("ocr-box");
    overlay.append(polygon);
  }
  frame.append(image, overlay);
  return frame;
}

function mediaOf(hit) {
  if (hit.modality === "image" && hit.thumbnail_url) {
    const image = document.createElement("img");
    image.src = hit.thumbnail_url;
    image.alt = hit.caption || basename(hit.path);
    image.loading = "lazy";
    return framed(image, hit.ocr && hit.ocr.boxes, hit.width, hit.height);
  }
  if (hit.modality === "audio") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    // Media fragment: the player starts at the window or spoken segment that matched.
    audio.src = hit.content_url + (hit.time_span ? `#t=${hit.time_span[0].toFixed(2)}` : "");
    if (hit.duration === null || hit.duration === undefined) return audio;
    // The player reads 0:00 until it loads; the catalog knows the length already.
    const wrapper = document.createElement("div");
    const length = document.createElement("span");
    length.className = "duration";
    length.textContent = clock(hit.duration);
    wrapper.append(audio, length);
    return wrapper;
  }
  const doc = document.createElement("div");
  doc.className = "doc";
  doc.textContent = "TEXT";
  return doc;
}

function clock(seconds) {
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function showLike(hit) {
  state.likeHit = hit;
  $("#query-like").hidden = hit === null;
  if (hit === null) return;
  const media = $("#query-like-media");
  media.replaceChildren();
  if (hit.thumbnail_url) {
    const image = document.createElement("img");
    image.src = `${hit.thumbnail_url}?size=64`;
    image.alt = "";
    media.append(image);
  }
  $("#query-like-name").textContent = `more like: ${basename(hit.path)}`;
}

function card(hit, queryText) {
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = hit.id;
  node.dataset.modality = hit.modality || "";
  node.querySelector(".media").append(mediaOf(hit));
  node.querySelector(".name").textContent = basename(hit.path);
  const snippet = hit.transcript || hit.caption || hit.text_excerpt || (hit.ocr ? hit.ocr.text : hit.ocr_text) || "";
  const at = hit.time_span ? ` [${hit.time_span[0].toFixed(1)}–${hit.time_span[1].toFixed(1)} s]` : "";
  node.querySelector(".snippet").append(highlighted(snippet, queryText), at);
  node.querySelector(".score").textContent = `score ${hit.score.toFixed(2)}`;
  const folded = (hit.duplicates || []).length;
  if (folded) {  // near-duplicates folded into this result
    const badge = node.querySelector(".folded");
    badge.textContent = `+${folded}`;
    badge.title = `${folded} near-duplicate${folded > 1 ? "s" : ""} folded into this result (ids ${hit.duplicates.join(", ")})`;
    badge.hidden = false;
  }
  const table = node.querySelector(".explanation");
  for (const part of hit.explanation || []) {
    const row = table.insertRow();
    const space = part.origin ? `${part.space} (${part.origin})` : part.space;
    for (const value of [space, part.part, `raw ${part.raw.toFixed(3)}`, `+${part.contribution.toFixed(2)}`]) {
      row.insertCell().textContent = value;
    }
  }
  node.querySelector(".why").addEventListener("click", () => { table.hidden = !table.hidden; });
  node.querySelector(".like").addEventListener("click", () => {
    clearFile();
    $("#query-text").value = "";
    showLike(hit);
    startSearch(hit.id);
  });
  for (const target of [node.querySelector(".name"), node.querySelector(".media img, .media .doc")]) {
    if (target) target.addEventListener("click", () => openDetail(hit));
  }
  return node;
}

async function openDetail(hit) {
  const body = $("#detail-body");
  body.replaceChildren();
  const response = await fetch(`items/${hit.id}`);
  const item = await response.json();
  if (item.modality === "image") {
    // A large JPEG rendition: browsers cannot show every format the indexer reads (TIFF, 16-bit, CMYK).
    const image = document.createElement("img");
    image.src = `${hit.thumbnail_url}?size=1024`;
    image.alt = item.caption || basename(item.path);
    body.append(framed(image, hit.ocr && hit.ocr.boxes, item.width, item.height));
  } else if (item.modality === "audio") {
    const audio = mediaOf(hit);
    audio.preload = "metadata";
    body.append(audio);
  }
  const list = document.createElement("dl");
  const fields = {
    file: item.path, type: item.media_type, size: `${item.size} bytes`,
    dimensions: item.width ? `${item.width} × ${item.height}` : null,
    duration: item.duration ? `${item.duration.toFixed(1)} s` : null,
    caption: item.caption, transcript: item.transcript, text: item.text_excerpt, "words in the image": item.ocr_text,
    ...Object.fromEntries(Object.entries(item.metadata || {}).map(([k, v]) => [k, JSON.stringify(v)])),
  };
  for (const [name, value] of Object.entries(fields)) {
    if (value === null || value === undefined || value === "") continue;
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = value;
    list.append(term, detail);
  }
  const open = document.createElement("a");
  open.href = hit.content_url;
  open.textContent = "open the file";
  open.target = "_blank";
  body.append(list, open);
  $("#detail").showModal();
}

function setFile(file) {
  if (!file || !(file.type.startsWith("image/") || file.type.startsWith("audio/"))) {
    setStatus("Only images and audio clips can be used as a query.", true);
    return;
  }
  state.file = file;
  $("#query-file-name").textContent = `${file.type.startsWith("audio/") ? "audio" : "image"}: ${file.name || "pasted"}`;
  $("#query-file").hidden = false;
  startSearch();
}

function clearFile() {
  state.file = null;
  $("#query-file").hidden = true;
  $("#file-input").value = "";
}

function wire() {
  $("#search-form").addEventListener("submit", (event) => { event.preventDefault(); startSearch(); });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    setFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])][0];
    if (file) { event.preventDefault(); setFile(file); }
  });
  $("#file-input").addEventListener("change", (event) => setFile(event.target.files[0]));
  $("#clear-file").addEventListener("click", () => { clearFile(); startSearch(); });
  $("#close-detail").addEventListener("click", () => $("#detail").close());
  $("#clear-like").addEventListener("click", () => {
    cancelFetch();
    state.request = null;
    showLike(null);
    $("#results").replaceChildren();
    showOverview();
  });
  for (const box of document.querySelectorAll("input[name=modality]")) {
    box.addEventListener("change", () => state.request && startSearch(state.request.likeItem));
  }
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && state.cursor) fetchPage();
  }, { rootMargin: "400px" }).observe($("#sentinel"));
  const initial = new URLSearchParams(location.search).get("q");
  if (initial) { $("#query-text").value = initial; startSearch(); } else showOverview();
}

// The landing view: what the home holds, which spaces can answer, example queries and the last index run.
async function showOverview() {
  const section = $("#overview");
  section.hidden = false;
  setStatus("");
  const response = await fetch("overview");
  if (!response.ok) { setStatus(`${response.status}: could not read what this home holds`, true); return; }
  const info = await response.json();
  const counts = Object.entries(info.items_by_modality).map(([modality, count]) => `${count} ${modality}`);
  const failed = info.items_by_status.failed || 0;
  $("#overview-counts").textContent =
    (counts.length ? counts.join(" · ") : "nothing indexed yet: run `xmodal index FOLDER`") +
    (failed ? ` · ${failed} failed files` : "");
  const rows = $("#overview-spaces tbody");
  rows.replaceChildren();
  for (const space of info.spaces) {
    const row = rows.insertRow();
    row.className = space.available ? "ready" : "unavailable";
    let stateText = space.available ? (space.vectors ? "ready" : "empty") : `unavailable: ${space.reason}`;
    if (space.switch) {
      const share = space.switch.progress === null ? "" : ` ${Math.floor(space.switch.progress * 100)}%`;
      stateText += ` · switching to ${space.switch.encoder} (version ${space.switch.version}):${share} built`;
    }
    if (space.previous) stateText += ` · previous model kept for rollback: ${space.previous}`;
    const model = space.version > 1 ? `${space.encoder} (version ${space.version})` : space.encoder;
    for (const value of [space.name, model, space.modalities.join(", "), String(space.vectors), stateText]) {
      row.insertCell().textContent = value;
    }
  }
  const run = info.last_run;
  $("#overview-run").textContent = run
    ? `last index run: ${new Date(run.started_at).toLocaleString()} (${run.status}) over ${run.roots.join(", ")}: ` +
      `${run.scanned} scanned, ${run.indexed} new, ${run.updated} changed, ${run.failed + run.still_failing} failed`
    : "no index run yet";
  const examples = $("#overview-examples");
  examples.replaceChildren();
  if (info.examples.length) examples.append("try: ");
  for (const text of info.examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.textContent = text;
    button.addEventListener("click", () => { $("#query-text").value = text; startSearch(); });
    examples.append(button, " ");
  }
}

wire();
