// The upload page: choose a slice and a model, POST /predict, show the answer, its refusals and the heat map.
"use strict";

const state = { file: null, requiresKey: false };

function byId(id) {
  return document.getElementById(id);
}

function describeFile(file) {
  // never the file name: it may carry a patient's name
  const kind = /\.dcm$/i.test(file.name) || file.type === "application/dicom" ? "DICOM" : (file.type || "file");
  return `1 file chosen (${kind}, ${Math.max(1, Math.round(file.size / 1024))} KB).`;
}

function chooseFile(file) {
  state.file = file || null;
  byId("file-note").textContent = file ? describeFile(file) : "No file chosen.";
  byId("submit").disabled = !file || byId("model-select").options.length === 0;
}

async function loadModels() {
  const select = byId("model-select");
  const response = await apiFetch("/models");
  if (response.status === 401) {
    state.requiresKey = true;
    byId("key-row").hidden = false;
    showRefusal("An API key is needed", await errorSentence(response));
    return;
  }
  if (!response.ok) {
    showRefusal("The models could not be listed", await errorSentence(response));
    return;
  }
  const list = await response.json();
  select.replaceChildren();
  for (const model of list.models) {
    const option = el("option", { value: model.name }, `${model.name} (${model.classes.join(", ")})`);
    if (model.name === list.default_model) option.selected = true;
    select.append(option);
  }
  hide("result");
  updateCardLinks();
  chooseFile(state.file);
}

function updateCardLinks() {
  const name = byId("model-select").value;
  for (const id of ["card-link", "model-note"]) byId(id).href = name ? `/ui/models/${encodeURIComponent(name)}` : "#";
}

function hide(id) {
  byId(id).hidden = true;
}

function showRefusal(title, text) {
  byId("result").hidden = false;
  byId("refusal").hidden = false;
  byId("answer").hidden = true;
  byId("heat").hidden = true;
  byId("refusal-title").textContent = title;
  byId("refusal-text").textContent = text;
}

function showAnswer(body) {
  byId("result").hidden = false;
  byId("refusal").hidden = true;
  byId("answer").hidden = false;
  const uncertain = body.status !== "ok" || body.label === null;
  byId("verdict-label").textContent = uncertain ? "Uncertain: no label" : `Model answer: ${body.label}`;
  byId("verdict-confidence").textContent = uncertain ? "" : `(confidence ${percent(body.confidence)})`;
  byId("uncertain-note").hidden = !uncertain;
  const rows = byId("bars").tBodies[0];
  rows.replaceChildren();
  const ordered = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, probability] of ordered) {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * probability).toFixed(1)}%`; // (a style attribute would break the page's CSP)
    const cell = el("td", { class: "bar-cell" });
    cell.append(bar);
    const row = el("tr", { "data-class": name });
    row.append(el("th", { scope: "row" }, name), cell, el("td", { class: "value" }, percent(probability)));
    rows.append(row);
  }
  const validity = body.in_distribution;
  byId("validity-note").textContent = validity && validity.checked
    ? (validity.enforced ? "Accepted as a brain MRI slice by the input-validity check." :
      "The input-validity check was switched off on this service: nothing guarantees this is a brain MRI slice.")
    : "";
}

function jetColour(value) {
  const channel = (offset) => Math.max(0, Math.min(1, 1.5 - Math.abs(4 * value - offset)));
  return [channel(3), channel(2), channel(1)];
}

function loadImage(source) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("image could not be decoded"));
    image.src = source;
  });
}

// The raw heat map (grey, 255 = hottest) coloured in JET, transparent where cold, as a PNG data URL.
async function colourHeatmap(greyBase64) {
  const grey = await loadImage(`data:image/png;base64,${greyBase64}`);
  const canvas = el("canvas");
  canvas.width = grey.naturalWidth;
  canvas.height = grey.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(grey, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const heat = data[i] / 255;
    const [r, g, b] = jetColour(heat);
    data[i] = 255 * r;
    data[i + 1] = 255 * g;
    data[i + 2] = 255 * b;
    data[i + 3] = 255 * Math.sqrt(heat); // as the service's overlay: colour in proportion to the heat
  }
  context.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

async function showHeatmap(gradcam) {
  const original = `data:image/png;base64,${gradcam.image_png_base64}`;
  byId("original-image").src = original;
  byId("base-image").src = original;
  byId("overlay-image").src = await colourHeatmap(gradcam.heatmap_png_base64);
  byId("download").href = `data:image/png;base64,${gradcam.png_base64}`;
  byId("heat-method").textContent = `(${gradcam.method} at ${gradcam.layer}, class ${gradcam.class})`;
  const warning = byId("heat-warning");
  warning.hidden = gradcam.agrees_with_onnx;
  warning.textContent = gradcam.agrees_with_onnx ? "" :
    "The network that drew this heat map predicts another class than the answer: do not trust the heat map.";
  applyOpacity();
  byId("heat").hidden = false;
}

function applyOpacity() {
  const overlay = byId("overlay-image");
  overlay.style.opacity = String(byId("opacity").value / 100);
  overlay.hidden = !byId("show-heat").checked;
}

async function classify(event) {
  event.preventDefault();
  if (!state.file) return;
  if (state.requiresKey) setApiKey(byId("api-key").value.trim());
  const gradcam = byId("want-gradcam").checked;
  const query = new URLSearchParams({ model: byId("model-select").value, gradcam: String(gradcam) });
  if (gradcam) query.set("gradcam_image", "true");
  const form = new FormData();
  form.append("file", state.file, "upload");
  byId("busy").hidden = false;
  byId("submit").disabled = true;
  try {
    const response = await apiFetch(`/predict?${query}`, { method: "POST", body: form });
    if (response.ok) {
      const body = await response.json();
      showAnswer(body);
      byId("heat").hidden = true;
      if (body.gradcam) await showHeatmap(body.gradcam);
    } else {
      const body = await response.json().catch(() => ({}));
      const sentence = typeof body.error === "string" ? body.error : `The service answered ${response.status}.`;
      const titles = {
        401: "An API key is needed",
        413: "The image is too large",
        415: "This kind of file is not supported",
        422: "Not accepted: no tumour label is given",
        429: "The service is busy",
      };
      let title = titles[response.status] || "The service refused the upload";
      if (body.error_type === "not_brain_mri") title = "Not a brain MRI slice: no tumour label is given";
      if (response.status === 401) {
        state.requiresKey = true;
        byId("key-row").hidden = false;
      }
      showRefusal(title, sentence);
    }
  } catch (error) {
    showRefusal("The service could not be reached", String(error.message || error));
  } finally {
    byId("busy").hidden = true;
    byId("submit").disabled = !state.file;
  }
}

function setUp() {
  const input = byId("file-input");
  const zone = byId("drop-zone");
  input.addEventListener("change", () => chooseFile(input.files[0]));
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files.length) chooseFile(event.dataTransfer.files[0]);
  });
  byId("model-select").addEventListener("change", updateCardLinks);
  byId("api-key").value = apiKey();
  byId("api-key").addEventListener("change", () => {
    setApiKey(byId("api-key").value.trim());
    loadModels();
  });
  byId("opacity").addEventListener("input", applyOpacity);
  byId("show-heat").addEventListener("change", applyOpacity);
  byId("upload-form").addEventListener("submit", classify);
  loadModels();
}

document.addEventListener("DOMContentLoaded", setUp);
