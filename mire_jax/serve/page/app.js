// The search page: pick or drop an image, type a question, see the ranked passages and where the model looked.
// Plain JS talking to /search, /explain and /healthz of the same server; no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const EXPLAIN_TOP = 10;  // passages whose match gets its own heatmap
let image = null;        // the chosen File, or null
let explanation = null;  // the last /explain answer
let searchSeq = 0;       // answers of an older search are dropped

async function callApi(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("The server could not be reached. Is it still running?");
  }
  let payload = null;
  try { payload = await response.json(); } catch (e) { /* not JSON: handled below */ }
  if (!response.ok) {
    const reason = payload && payload.error ? payload.error : `the server answered ${response.status}`;
    throw new Error(reason.charAt(0).toUpperCase() + reason.slice(1));
  }
  return payload;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setImage(file) {
  if (file && !file.type.startsWith("image/")) {
    showError(`"${file.name}" is not an image file.`);
    return;
  }
  image = file || null;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !image;
  $("drop-hint").hidden = !!image;
  $("clear-image").hidden = !image;
  if (image) preview.src = URL.createObjectURL(image); else preview.removeAttribute("src");
  showError("");
}

function missingImage(id) {
  const note = document.createElement("span");
  note.className = "passage-image missing";
  note.textContent = "image unavailable";
  note.title = `the server could not send the image of passage ${id}`;
  return note;
}

function renderResults(answer) {
  const list = $("results");
  list.replaceChildren();
  for (const r of answer.results) {
    const item = document.createElement("li");
    item.className = "result";
    item.dataset.id = r.id;
    const head = document.createElement("div");
    head.className = "head";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `#${r.rank}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${r.score.toFixed(3)}`;
    const id = document.createElement("span");
    id.className = "pid";
    id.textContent = `id ${r.id}`;
    head.append(rank, score, id);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = r.text;
    const body = document.createElement("div");
    body.className = "body";
    if (r.image) {
      // a passage that carries an image: shown beside its text (an image-only passage has none)
      const picture = document.createElement("img");
      picture.className = "passage-image";
      picture.src = r.image;
      picture.alt = `the image of passage ${r.id}`;
      picture.loading = "lazy";
      picture.addEventListener("error", () => { picture.replaceWith(missingImage(r.id)); });
      body.append(picture);
      if (!r.text) text.classList.add("muted");
      if (!r.text) text.textContent = "(image only)";
    }
    body.append(text);
    item.append(head, body);
    list.append(item);
  }
  const t = answer.timings;
  $("timings").textContent = answer.results.length
    ? `${answer.results.length} passages in ${t.total_ms.toFixed(0)} ms (encode ${t.encode_ms.toFixed(0)} ms, ` +
      `search ${t.search_ms.toFixed(0)} ms, batch of ${t.batch_size})`
    : "No passages found.";
}

function addWhyButtons() {
  for (const item of $("results").children) {
    const index = explanation.passages.findIndex((p) => String(p.id) === item.dataset.id);
    if (index < 0) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link why";
    button.textContent = "where this match looked";
    button.addEventListener("click", () => {
      $("view-select").value = `passage:${index}`;
      $("heatmap-toggle").checked = true;
      showView();
    });
    item.querySelector(".head").append(button);
  }
}

function fillViewSelect() {
  const select = $("view-select");
  select.replaceChildren();
  const add = (value, label) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    select.append(option);
  };
  add("mean", "all heads (mean)");
  explanation.passages.forEach((p, i) => add(`passage:${i}`, `match with #${i + 1} (id ${p.id})`));
  explanation.per_head.forEach((_, h) => add(`head:${h}`, `head ${h}`));
}

function showView() {
  if (!explanation) return;
  const [kind, index] = $("view-select").value.split(":");
  let src = explanation.mean;
  let contrast = explanation.contrast.mean;
  let shares = "";
  for (const item of $("results").children) item.classList.remove("selected");
  if (kind === "head") {
    src = explanation.per_head[+index];
    contrast = explanation.contrast.per_head[+index];
  }
  if (kind === "passage") {
    const p = explanation.passages[+index];
    src = p.heatmap;
    contrast = p.contrast;
    const total = p.shares.text + p.shares.global + p.shares.pooled;
    const pct = (x) => `${Math.round((100 * x) / (total || 1))}%`;
    shares = `Score ${p.score.toFixed(3)}: text tokens ${pct(p.shares.text)}, whole-image tokens ` +
             `${pct(p.shares.global)}, pooled image regions ${pct(p.shares.pooled)}. `;
    const item = [...$("results").children].find((li) => li.dataset.id === String(p.id));
    if (item) item.classList.add("selected");
  }
  $("heatmap-img").src = src;
  $("heatmap-img").hidden = !$("heatmap-toggle").checked;
  $("shares").textContent = shares + `Brightest region: ${contrast.toFixed(1)}x the attention of the dimmest ` +
                            "(colours span the two).";
}

async function explain(seq, form) {
  try {
    const answer = await callApi("/explain", { method: "POST", body: form });
    if (seq !== searchSeq) return;
    explanation = answer;
    $("view-image").src = answer.image;
    fillViewSelect();
    $("looked").hidden = false;
    addWhyButtons();
    showView();
  } catch (e) {
    if (seq === searchSeq) showError(`Could not compute the heatmaps: ${e.message}`);
  }
}

async function search(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!image && !question) {
    showError("Give an image, a question, or both.");
    return;
  }
  const seq = ++searchSeq;
  const form = new FormData();
  if (image) form.append("image", image, image.name || "image");
  if (question) form.append("question", question);
  form.append("k", $("k").value || "10");
  showError("");
  $("status").textContent = "Searching…";
  $("search-button").disabled = true;
  $("looked").hidden = true;
  explanation = null;
  try {
    const answer = await callApi("/search", { method: "POST", body: form });
    if (seq !== searchSeq) return;
    renderResults(answer);
    $("status").textContent = "";
    if (image && answer.results.length) {
      const explainForm = new FormData();
      explainForm.append("image", image, image.name || "image");
      if (question) explainForm.append("question", question);
      explainForm.append("passage_ids", answer.results.slice(0, EXPLAIN_TOP).map((r) => r.id).join(","));
      $("status").textContent = "Computing the heatmaps…";
      await explain(seq, explainForm);
      if (seq === searchSeq) $("status").textContent = "";
    }
  } catch (e) {
    if (seq === searchSeq) {
      $("status").textContent = "";
      showError(e.message);
    }
  } finally {
    if (seq === searchSeq) $("search-button").disabled = false;
  }
}

function setUp() {
  const zone = $("drop-zone");
  $("image-input").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("clear-image").addEventListener("click", () => { $("image-input").value = ""; setImage(null); });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image-input").click(); }
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) setImage(file);
  });
  $("search-form").addEventListener("submit", search);
  $("heatmap-toggle").addEventListener("change", showView);
  $("view-select").addEventListener("change", showView);
  callApi("/healthz").then((h) => {
    // The model folder's last three parts name it; the full path is in /healthz.
    const model = h.model.dir.split("/").filter(Boolean).slice(-3).join("/");
    const pictures = h.index.passages_with_images ? ` (${h.index.passages_with_images} with images)` : "";
    $("health").textContent = `${h.index.passages} passages${pictures} · ${h.device.platform} · model …/${model}`;
    $("health").title = h.model.dir;
    $("k").max = h.limits.max_k;
  }).catch((e) => { $("health").textContent = e.message; });
}

setUp();
