// The demo page: choose or upload an image, ask, show what /api/ask answers. No external assets.
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;
let chosen = null;  // {image_id: N} or {upload: base64}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function choose(request, src, button) {
  chosen = request;
  $("preview").src = src;
  $("preview").hidden = false;
  document.querySelectorAll(".thumb").forEach((b) => b.classList.toggle("chosen", b === button));
  showError("");
}

async function start() {
  const response = await fetch("/api/info");
  info = await response.json();
  const what = info.kind === "vqa" ? "VQA" : "captioning";
  $("checkpoint").textContent = `${what} checkpoint ${info.ckpt}`;
  if (info.kind === "caption") {
    $("ask-title").textContent = "2. Caption it";
    $("question").hidden = true;
    $("ask").textContent = "Caption";
  }
  for (const id of info.images) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.title = `image ${id}`;
    button.dataset.imageId = id;
    const img = document.createElement("img");
    img.src = `/api/images/${id}`;
    img.alt = `image ${id}`;
    button.appendChild(img);
    button.addEventListener("click", () => choose({image_id: id}, img.src, button));
    $("images").appendChild(button);
  }
  if (!info.images.length) $("images").textContent = "(no data images configured: upload one)";
}

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  const limit = info.limits.max_upload_bytes;
  if (file.size > limit) {
    chosen = null;
    showError(`the upload is larger than ${Math.round(limit / 1048576)} MB; send a smaller image`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => choose({upload: reader.result}, reader.result, null);
  reader.onerror = () => showError("the browser could not read that file");
  reader.readAsDataURL(file);
});

function showTokens(tokens) {
  $("tokens").replaceChildren(...tokens.map((t) => {
    const span = document.createElement("span");
    span.className = "token" + (t.known ? "" : " unknown") + (t.read ? "" : " cut");
    span.textContent = t.word;
    span.title = !t.read ? "past the words the model reads" : t.known ? "in the vocabulary" : "not in the vocabulary: read as <unk>";
    return span;
  }));
}

function showVQA(result) {
  $("answers").replaceChildren(...result.answers.map((a) => {
    const li = document.createElement("li");
    li.className = "answer";
    const name = document.createElement("span");
    name.className = "answer-text";
    name.textContent = a.answer;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(200 * a.score)}px`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = a.score.toFixed(3);
    li.append(name, bar, score);
    return li;
  }));
  showTokens(result.tokens);
  $("attention").src = result.attention;
  $("regions").textContent = result.regions;
  $("strongest").textContent = `(weight ${result.strongest.weight.toFixed(2)})`;
  $("command").textContent = result.command;
}

function showCaption(result) {
  $("caption").textContent = result.caption;
  $("words").replaceChildren(...result.words.map((w) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "word-attention";
    img.src = w.attention;
    img.alt = `attention at "${w.word}"`;
    const caption = document.createElement("figcaption");
    caption.textContent = w.word;
    figure.append(img, caption);
    return figure;
  }));
  $("regions").textContent = result.regions;
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!chosen) { showError("choose one of the images or upload one first"); return; }
  showError("");
  $("busy").hidden = false;
  $("ask").disabled = true;
  try {
    const response = await fetch("/api/ask", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({...chosen, question: $("question").value}),
    });
    let result;
    try { result = await response.json(); } catch (e) { result = {error: `the server answered ${response.status}`}; }
    if (result.error) { showError(result.error); return; }
    const vqa = result.kind === "vqa";
    $("vqa-result").hidden = !vqa;
    $("caption-result").hidden = vqa;
    $("attention-figure").hidden = !vqa;
    $("command-box").hidden = !vqa;
    (vqa ? showVQA : showCaption)(result);
    $("result").hidden = false;
  } catch (e) {
    showError(`no answer from the server (${e.message}); is it still running?`);
  } finally {
    $("busy").hidden = true;
    $("ask").disabled = false;
  }
});

start().catch((e) => showError(`cannot reach the demo server (${e.message})`));
