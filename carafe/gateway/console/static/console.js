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

// Keys page: create a key (its clear value is shown once), revoke one, set a budget.
function formObject(form) {
  const data = new FormData(form);
  const out = {};
  for (const [name, value] of data.entries()) {
    if (name === "roles") (out.roles = out.roles || []).push(value);
    else if (value !== "") out[name] = value;
  }
  for (const name of ["rpm", "tpm", "max_tokens"]) if (name in out) out[name] = Number(out[name]);
  if ("groups" in out) out.groups = out.groups.split(",").map((g) => g.trim()).filter(Boolean);
  return out;
}

function onSubmit(id, handler) {
  const form = document.getElementById(id);
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = document.getElementById(`${id}-result`);
    try {
      await handler(form, result);
    } catch (e) {
      result.textContent = e.message;
      result.className = "error";
    }
  });
}

function keysPage() {
  onSubmit("new-key", async (form, result) => {
    const made = await postJson("/console/api/keys", formObject(form));
    result.className = "";
    result.replaceChildren(`Key for ${made.user} (shown once, copy it now): `);
    const code = document.createElement("code");
    code.id = "new-key-value";
    code.textContent = made.key;
    result.append(code, " ");
    const again = document.createElement("a");
    again.href = "/console/keys";
    again.textContent = "Reload the list";
    result.append(again);
  });
  onSubmit("key-limits", async (form, result) => {
    const key = await postJson("/console/api/limits", formObject(form));
    result.className = "";
    result.textContent = `Key ${key.key_id}: ${key.rpm} requests and ${key.tpm ?? "unlimited"} tokens per minute.`;
    window.location.reload();
  });
  onSubmit("new-budget", async (form, result) => {
    const rule = await postJson("/console/api/budgets", formObject(form));
    result.className = "";
    result.textContent = `Budget set: ${rule.scope}, ${rule.max_tokens} tokens per ${rule.window}.`;
    window.location.reload();
  });
  for (const button of document.querySelectorAll("button[data-revoke]")) {
    button.addEventListener("click", async () => {
      const id = button.dataset.revoke;
      if (!window.confirm(`Revoke key ${id}? Requests with it are refused from now on.`)) return;
      try {
        await postJson(`/console/api/keys/${encodeURIComponent(id)}/revoke`, {});
        window.location.reload();
      } catch (e) {
        button.after(` ${e.message}`);
      }
    });
  }
}

// Guards page: run the policy's checks on a text and show each verdict.
function verdictTable(result) {
  const table = document.createElement("table");
  table.className = "verdicts";
  const caption = table.createCaption();
  caption.textContent = `Each check of the ${result.policy} policy (${result.stage})`;
  const head = table.createTHead().insertRow();
  for (const name of ["check", "action", "category", "score", "reason"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    head.append(th);
  }
  const body = table.createTBody();
  for (const v of result.verdicts) {
    const row = body.insertRow();
    for (const cell of [v.check, v.action, v.category, v.score, v.reason]) row.insertCell().textContent = String(cell);
  }
  return table;
}

function guardsPage() {
  onSubmit("guard-test", async (form, result) => {
    result.textContent = "Testing…";
    const verdict = await postJson("/console/api/guards/test", formObject(form));
    result.className = "";
    const line = document.createElement("p");
    line.id = "guard-outcome";
    line.textContent = verdict.outcome === "block" ? `Blocked by ${verdict.blocked_by}.`
      : verdict.outcome === "redact" ? `Redacted: ${verdict.text}` : "Allowed.";
    result.replaceChildren(line, verdictTable(verdict));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  keysPage();
  guardsPage();
});
