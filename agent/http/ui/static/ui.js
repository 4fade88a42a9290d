// wiremesh web UI: live refresh of marked regions, dialogs, row menus, RIB rows that expand, the rule
// editor of policy sets, and another machine's RIB fetched from /v1/machines/NAME/rib.
// Plain JavaScript, no build step, nothing loaded from the network but this agent.
"use strict";

(function () {
  const POLL_MS = 2000;
  const expanded = new Set(); // RIB destinations the operator opened, kept across refreshes

  // --- live refresh ---------------------------------------------------------------------------------
  // An element with data-poll="URL" is replaced by URL's HTML every few seconds. A region the operator
  // is working in (an open row menu, focus inside) is left alone until they are done.
  function busy(el) {
    return el.querySelector("details.menu[open]") !== null || el.contains(document.activeElement);
  }

  async function refresh(el) {
    if (document.hidden || busy(el)) return;
    try {
      const response = await fetch(el.dataset.poll, {
        credentials: "same-origin",
        headers: { "x-requested-with": "wiremesh-ui" },
      });
      if (response.redirected || !response.ok) {
        if (response.redirected && new URL(response.url).pathname === "/ui/login") {
          window.location.reload(); // the session ended: show the login page
        }
        return;
      }
      const html = await response.text();
      if (html !== el.dataset.lastHtml && !busy(el)) {
        el.dataset.lastHtml = html;
        el.innerHTML = html;
        wire(el);
      }
    } catch (err) {
      // the agent is restarting or unreachable: keep what is shown, try again next time
    }
  }

  function startPolling() {
    document.querySelectorAll("[data-poll]").forEach((el) => {
      const every = Number(el.dataset.pollEvery || 0) * 1000 || POLL_MS;
      window.setInterval(() => refresh(el), every);
    });
  }

  // --- dialogs ----------------------------------------------------------------------------------------
  function openDialog(dialog, opener) {
    if (typeof dialog.showModal !== "function") {
      dialog.setAttribute("open", "");
      return;
    }
    if (dialog.open) dialog.close(); // shown without script (the open attribute): make it modal
    dialog.showModal();
    dialog.returnFocusTo = opener || null;
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnFocusTo) dialog.returnFocusTo.focus();
      },
      { once: true },
    );
    const invalid = dialog.querySelector("[aria-invalid=true]");
    const first = invalid || dialog.querySelector("input:not([type=hidden]):not([readonly]), select, textarea, button");
    if (first) first.focus();
  }

  function closeDialog(dialog) {
    dialog.close(); // the close event puts focus back on the opener
  }

  // --- wiring (run on load and on every refreshed region) -------------------------------------------------
  function wire(root) {
    root.querySelectorAll("[data-open-dialog]").forEach((el) => {
      el.addEventListener("click", (ev) => {
        const dialog = document.getElementById(el.dataset.openDialog);
        if (!dialog) return;
        ev.preventDefault();
        openDialog(dialog, el);
      });
    });
    root.querySelectorAll("[data-close-dialog]").forEach((el) => {
      el.addEventListener("click", () => closeDialog(el.closest("dialog")));
    });
    root.querySelectorAll("[data-confirm-delete]").forEach((el) => {
      el.addEventListener("click", (ev) => {
        const dialog = document.getElementById("confirm-delete");
        if (!dialog) return; // no dialog on this page: follow the link to the confirmation page
        ev.preventDefault();
        const menu = el.closest("details.menu");
        if (menu) menu.open = false;
        dialog.querySelector("form").action = el.dataset.action;
        dialog.querySelector("[data-confirm-text]").textContent =
          `Delete ${el.dataset.label} ${el.dataset.name}? This removes it from every machine in the mesh.`;
        dialog.querySelector("#confirm-delete-title").textContent = `Delete ${el.dataset.name}?`;
        openDialog(dialog, menu ? menu.querySelector("summary") : el);
        dialog.querySelector("button[type=submit]").focus();
      });
    });
    root.querySelectorAll("details.menu").forEach((menu) => {
      menu.addEventListener("keydown", (ev) => {
        if (ev.key === "Escape" && menu.open) {
          menu.open = false;
          menu.querySelector("summary").focus();
        }
      });
    });
    root.querySelectorAll("[data-expand]").forEach((button) => {
      const row = document.getElementById(button.getAttribute("aria-controls"));
      const key = button.closest("[data-prefix]")?.dataset.prefix;
      const show = (open) => {
        button.setAttribute("aria-expanded", open ? "true" : "false");
        if (row) row.hidden = !open;
      };
      if (key && expanded.has(key)) show(true);
      button.addEventListener("click", () => {
        const open = button.getAttribute("aria-expanded") !== "true";
        show(open);
        if (key) open ? expanded.add(key) : expanded.delete(key);
      });
    });
  }

  // Close a row menu when clicking elsewhere.
  document.addEventListener("click", (ev) => {
    document.querySelectorAll("details.menu[open]").forEach((menu) => {
      if (!menu.contains(ev.target)) menu.open = false;
    });
  });

  // --- the policy set rule editor -------------------------------------------------------------------
  function renumber(container) {
    container.querySelectorAll("[data-rule]").forEach((rule, i) => {
      rule.querySelector("[data-rule-number]").textContent = String(i + 1);
      rule.querySelectorAll("[name], [id], [for], [aria-describedby]").forEach((el) => {
        for (const attr of ["name", "id", "for", "aria-describedby"]) {
          const value = el.getAttribute(attr);
          if (value) el.setAttribute(attr, value.replace(/rule-(\d+|__i__)-/, `rule-${i}-`));
        }
      });
    });
  }

  function wireRules(form) {
    const container = form.querySelector("[data-rules]");
    const template = document.getElementById("rule-template");
    form.addEventListener("click", (ev) => {
      const target = ev.target.closest("button");
      if (!target) return;
      const rule = target.closest("[data-rule]");
      if (target.matches("[data-rule-add]")) {
        container.appendChild(template.content.cloneNode(true));
        renumber(container);
        container.lastElementChild.querySelector("input").focus();
      } else if (rule && target.matches("[data-rule-remove]")) {
        const next = rule.nextElementSibling || rule.previousElementSibling;
        rule.remove();
        renumber(container);
        (next ? next.querySelector("input") : form.querySelector("[data-rule-add]")).focus();
      } else if (rule && target.matches("[data-rule-up]") && rule.previousElementSibling) {
        container.insertBefore(rule, rule.previousElementSibling);
        renumber(container);
        target.focus();
      } else if (rule && target.matches("[data-rule-down]") && rule.nextElementSibling) {
        container.insertBefore(rule.nextElementSibling, rule);
        renumber(container);
        target.focus();
      }
    });
  }

  // --- another machine's RIB ----------------------------------------------------------------------------
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function badge(parent, text, cls) {
    const span = document.createElement("span");
    span.className = "badge " + (cls || "");
    span.textContent = text;
    parent.appendChild(span);
    parent.appendChild(document.createTextNode(" "));
  }

  // Where a path came from: the peer, and for a reflected path the machine that announced it first.
  function source(p) {
    const peer = p.peer_name || p.peer;
    return p.origin_machine && p.origin_machine !== p.peer_name ? `${p.origin_machine} via ${peer}` : peer;
  }

  function renderRib(holder, data) {
    const table = document.createElement("table");
    table.className = "list rib";
    table.id = "rib";
    table.innerHTML =
      '<thead><tr><th scope="col">Destination</th><th scope="col">Best path</th><th scope="col">Quality</th>' +
      '<th scope="col">AS path</th><th scope="col">Communities</th></tr></thead>';
    (data.routes || []).forEach((d, n) => {
      const body = document.createElement("tbody");
      body.className = "dest";
      body.dataset.prefix = d.prefix;
      const b = d.best;
      const tr = document.createElement("tr");
      tr.className = "best-row";
      const th = document.createElement("th");
      th.scope = "row";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "expander";
      button.setAttribute("aria-expanded", "false");
      button.setAttribute("aria-controls", `ralt-${n}`);
      button.dataset.expand = "";
      button.textContent = d.prefix;
      th.appendChild(button);
      tr.appendChild(th);
      cell(tr, `via ${b.next_hop || "local"} from ${source(b)}`, "best");
      const q = cell(tr, "");
      if (d.installed && d.installed.length) badge(q, "in kernel", "healthy");
      else if (d.fib_error) badge(q, "kernel error", "unhealthy");
      else badge(q, "not installed", "unknown");
      if (d.ecmp && d.ecmp.length > 1) badge(q, `ECMP ×${d.ecmp.length}`);
      badge(q, `${d.paths.length} path${d.paths.length === 1 ? "" : "s"}`);
      badge(q, b.peer_type);
      cell(tr, b.as_path || "(empty)");
      cell(tr, (b.communities || []).join(", "));
      body.appendChild(tr);
      const alt = document.createElement("tr");
      alt.className = "alternatives";
      alt.id = `ralt-${n}`;
      alt.hidden = true;
      const td = document.createElement("td");
      td.colSpan = 5;
      const paths = document.createElement("table");
      paths.className = "paths";
      paths.innerHTML =
        "<thead><tr><th>Path</th><th>From</th><th>Next hop</th><th>AS path</th><th>LOCAL_PREF</th><th>MED</th>" +
        "<th>Origin</th><th>Communities</th><th>Age</th><th>Why</th></tr></thead>";
      const pbody = document.createElement("tbody");
      d.paths.forEach((p) => {
        const row = document.createElement("tr");
        row.className = p.best ? "best" : p.multipath ? "multipath" : "lost";
        row.dataset.peer = p.peer;
        cell(row, p.best ? "best" : p.multipath ? "multipath" : "alternative");
        cell(row, `${source(p)} AS${p.peer_asn}, ${p.peer_type}`);
        cell(row, p.next_hop || "—");
        cell(row, p.as_path || "(empty)");
        cell(row, p.local_pref ?? "—");
        cell(row, p.med ?? "—");
        cell(row, p.origin);
        cell(row, (p.communities || []).join(", "));
        cell(row, `${Math.round(p.age_seconds)} s`);
        cell(row, p.reason, "reason");
        pbody.appendChild(row);
      });
      paths.appendChild(pbody);
      td.appendChild(paths);
      alt.appendChild(td);
      body.appendChild(alt);
      table.appendChild(body);
    });
    if (!data.routes || data.routes.length === 0) {
      const body = document.createElement("tbody");
      body.innerHTML = '<tr><td colspan="5" class="muted">The RIB is empty.</td></tr>';
      table.appendChild(body);
    }
    holder.replaceChildren(table);
    wire(holder);
  }

  async function loadRemoteRib(holder) {
    const name = holder.dataset.machine;
    let message;
    try {
      const response = await fetch(holder.dataset.remoteRib, { credentials: "same-origin" });
      if (response.ok) {
        renderRib(holder, await response.json());
        return;
      }
      let detail = "";
      try {
        const body = await response.json();
        detail = body.error || body.detail || "";
      } catch (err) {
        detail = "";
      }
      message =
        response.status === 404 && (!detail || detail === "Not Found")
          ? `This agent cannot show ${name}'s RIB: it does not serve /v1/machines/${name}/rib (HTTP 404). ` +
            `Open the UI on ${name} itself to see its RIB.`
          : `${name}'s RIB is not available: /v1/machines/${name}/rib answered HTTP ${response.status}` +
            (detail ? `: ${typeof detail === "string" ? detail : JSON.stringify(detail)}` : ".");
    } catch (err) {
      message = `${name}'s RIB could not be fetched (${err}).`;
    }
    const p = document.createElement("p");
    p.className = "notice";
    p.setAttribute("role", "status");
    p.dataset.ribStatus = "";
    p.textContent = message;
    holder.replaceChildren(p);
  }

  // --- start ------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    wire(document);
    document.querySelectorAll("[data-rules-form]").forEach(wireRules);
    document.querySelectorAll("dialog[data-open-on-load]").forEach((dialog) => openDialog(dialog, null));
    document.querySelectorAll("[data-remote-rib]").forEach((holder) => {
      loadRemoteRib(holder);
      window.setInterval(() => {
        if (!document.hidden && !holder.contains(document.activeElement)) loadRemoteRib(holder);
      }, 5000);
    });
    startPolling();
  });
})();
