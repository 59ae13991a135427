// Carafe console: confirmations for adapter changes. The page is usable without this
// file for reading; changes need it (they show what changes before they are made).
"use strict";

function csrf() {
  const meta = document.querySelector('meta[name="carafe-csrf"]');
  return meta ? meta.content : "";
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Carafe-CSRF": csrf() },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((data.error && data.error.message) || `request failed (${response.status})`);
  }
  return data;
}

function describe(name, change) {
  if (change.action === "promote") return `Promote ${name} version ${change.version} to stable.`;
  if (change.action === "rollback") return `Roll ${name}'s stable channel back to its previous version.`;
  return `Send ${change.weight} % of users of ${name} to version ${change.version} (canary).`;
}

function show(value) {
  return value === null || value === undefined ? "—" : String(value);
}

async function confirmChange(name, change) {
  const dialog = document.getElementById("confirm");
  const rows = document.getElementById("confirm-changes");
  const error = document.getElementById("confirm-error");
  const apply = document.getElementById("confirm-apply");
  document.getElementById("confirm-what").textContent = describe(name, change);
  rows.replaceChildren();
  error.textContent = "";
  apply.disabled = true;
  dialog.showModal();
  try {
    const preview = await postJson(`/console/api/adapters/${encodeURIComponent(name)}/preview`, change);
    for (const move of preview.changes) {
      const tr = document.createElement("tr");
      for (const cell of [move.channel, show(move.from), show(move.to)]) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.append(td);
      }
      rows.append(tr);
    }
    if (!preview.changes.length) error.textContent = "Nothing would change.";
    apply.disabled = !preview.changes.length;
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  apply.onclick = async () => {
    apply.disabled = true;
    try {
      await postJson(`/console/api/adapters/${encodeURIComponent(name)}/apply`, change);
      window.location.reload();
    } catch (e) {
      error.textContent = e.message;
      apply.disabled = false;
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const section of document.querySelectorAll("section.adapter")) {
    const name = section.dataset.adapter;
    for (const button of section.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => {
        const change = { action: button.dataset.action };
        if (button.dataset.version) change.version = Number(button.dataset.version);
        confirmChange(name, change);
      });
    }
    const split = section.querySelector("form.split");
    if (split) {
      split.addEventListener("submit", (event) => {
        event.preventDefault();
        const data = new FormData(split);
        confirmChange(name, { action: "split", version: Number(data.get("version")), weight: Number(data.get("weight")) });
      });
    }
  }
});
