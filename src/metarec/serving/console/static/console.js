// The console's actions call the service's JSON API with the token typed above (kept in this
// tab's sessionStorage only). Text from the server or the user is written with textContent,
// never as HTML.
"use strict";

const TOKEN_KEY = "metarec-token";

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function say(message, kind) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = kind || "";
}

async function call(method, url, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : response.statusText;
    throw new Error(response.status + ": " + detail);
  }
  return data;
}

async function waitForJob(jobId) {
  for (let i = 0; i < 600; i++) {
    const job = await call("GET", "/jobs/" + encodeURIComponent(jobId));
    if (job.state === "done") return job;
    if (job.state === "failed") throw new Error("adaptation failed: " + job.error);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error("the adaptation is still running; reload later");
}

async function adapt(category) {
  say("adapting " + category + "…");
  const job = await call("POST", "/categories/" + encodeURIComponent(category) + "/adapt");
  const done = await waitForJob(job.job_id);
  say("adapted " + category + " (version " + done.adaptation_version + ")", "ok");
  setTimeout(() => location.reload(), 600);
}

function parseItems(text) {
  return text.split("\n").map((line) => line.trim()).filter((line) => line).map((line) => {
    const comma = line.indexOf(",");
    if (comma < 0) return { item_id: line };
    return { item_id: line.slice(0, comma).trim(), title: line.slice(comma + 1).trim() || null };
  });
}

async function launch(form) {
  const data = new FormData(form);
  const body = {
    category: data.get("category").trim(),
    items: parseItems(data.get("items")),
  };
  if (data.get("description").trim()) body.description = data.get("description").trim();
  say("launching " + body.category + "…");
  const result = await call("POST", "/categories", body);
  say("launched " + result.category + ": " + result.n_items + " items", "ok");
  setTimeout(() => location.reload(), 600);
}

function guarded(action) {
  return (...args) => {
    if (!token()) {
      say("type the service's token first: actions need it", "error");
      return;
    }
    action(...args).catch((error) => say(error.message, "error"));
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  input.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
  for (const button of document.querySelectorAll("button.adapt")) {
    button.addEventListener("click", guarded(() => adapt(button.dataset.category)));
  }
  const form = document.getElementById("launch");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(() => launch(form))();
    });
  }
});
