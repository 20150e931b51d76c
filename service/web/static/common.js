// Shared by the pages: the API key (kept in this tab only) and fetch with it.
"use strict";

const KEY_STORE = "mri-api-key";

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORE, value);
  else sessionStorage.removeItem(KEY_STORE);
}

async function apiFetch(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  return fetch(path, { ...options, headers });
}

async function errorSentence(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
  } catch (ignored) {
    // not JSON: fall through
  }
  return `The service answered ${response.status}.`;
}

function el(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function percent(value) {
  return `${(100 * value).toFixed(1)} %`;
}
