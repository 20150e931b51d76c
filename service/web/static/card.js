// The model card: GET /models/{name} and its documents, drawn for a reader who is not an engineer.
"use strict";

function byId(id) {
  return document.getElementById(id);
}

function modelName() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[parts.length - 1] || "");
}

function fact(list, term, value) {
  list.append(el("dt", {}, term), el("dd", {}, value));
}

async function figure(name, documentName, imageId, figureId, documents) {
  if (!documents.includes(documentName)) return;
  const response = await apiFetch(`/models/${encodeURIComponent(name)}/documents/${documentName}`);
  if (!response.ok) return;
  byId(imageId).src = URL.createObjectURL(await response.blob());
  byId(figureId).hidden = false;
}

function fail(text, needsKey) {
  byId("card-error").hidden = false;
  byId("card-error-text").textContent = text;
  byId("card-key-row").hidden = !needsKey;
}

async function load() {
  const name = modelName();
  byId("model-name").textContent = name;
  const response = await apiFetch(`/models/${encodeURIComponent(name)}`);
  if (!response.ok) {
    fail(await errorSentence(response), response.status === 401);
    return;
  }
  byId("card-error").hidden = true;
  const detail = await response.json();
  const manifest = detail.manifest;
  const facts = byId("facts");
  facts.replaceChildren();
  fact(facts, "Classes", detail.classes.join(", "));
  fact(facts, "Version", String(detail.version));
  fact(facts, "Network", `${manifest.backbone || "?"} (${manifest.weights_init || "?"} start), ` +
    `${detail.input.width} x ${detail.input.height} input`);
  if (manifest.keras) {
    fact(facts, "Heat map", `${manifest.keras.gradcam_method || "gradcam"} at ${manifest.keras.gradcam_layer}`);
  }
  const evaluation = manifest.evaluation || {};
  const split = evaluation.split || {};
  const sizes = split.sizes || {};
  byId("data-text").textContent = `Split ${split.path || "?"} (seed ${split.seed ?? "?"}): ` +
    `${sizes.train ?? "?"} training, ${sizes.val ?? "?"} validation and ${sizes.test ?? "?"} test images, ` +
    "with near-duplicate images kept on one side of the split.";
  const test = evaluation.test || {};
  byId("test-summary").textContent = test.accuracy === undefined ? "No test figures in the manifest." :
    `Accuracy ${percent(test.accuracy)} on ${test.n ?? "?"} test images.`;
  const rows = byId("per-class").tBodies[0];
  rows.replaceChildren();
  for (const [label, figures] of Object.entries(test.per_class || {})) {
    const row = el("tr");
    row.append(el("th", { scope: "row" }, label), el("td", {}, percent(figures.precision)),
      el("td", {}, percent(figures.recall)), el("td", {}, percent(figures.specificity)),
      el("td", {}, String(figures.support)));
    rows.append(row);
  }
  const calibration = manifest.calibration;
  if (calibration && calibration.test) {
    const after = calibration.test.after;
    const floor = after.ece_if_calibrated ? ` (a perfectly calibrated model would show about ` +
      `${after.ece_if_calibrated.median.toFixed(3)} on this many images)` : "";
    byId("calibration-text").textContent = `Confidence is calibrated (temperature ` +
      `${calibration.temperature.toFixed(3)}): expected calibration error ${after.ece.toFixed(3)} on the test ` +
      `images${floor}.`;
  }
  const validity = manifest.input_validity;
  if (validity) {
    byId("validity-text").textContent = `Uploads that do not look like the ${validity.bank?.size ?? ""} ` +
      `brain MRI training slices are refused (score above ${Number(validity.threshold).toFixed(3)}); ` +
      "see README for the share of other images refused.";
  }
  const documents = manifest.documents || [];
  await Promise.all([
    figure(name, "confusion_matrix.png", "confusion", "confusion-figure", documents),
    figure(name, "reliability.png", "reliability", "reliability-figure", documents),
    figure(name, "selective.png", "selective", "selective-figure", documents),
  ]);
  byId("card").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  byId("card-api-key").value = apiKey();
  byId("card-key-button").addEventListener("click", () => {
    setApiKey(byId("card-api-key").value.trim());
    load();
  });
  load();
});
