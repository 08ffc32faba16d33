// claude-vm web UI: the little the pages need beyond HTML. No framework, no build step.
// Actions call /api/v1 with the session's CSRF token; live parts are server-rendered
// fragments (polled lists, or the conversation's event stream).
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const csrfMeta = $('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  function api(method, url, body) {
    const headers = { "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  async function failure(res) {
    try {
      const j = await res.json();
      return j.error + (j.hint ? " (" + j.hint + ")" : "");
    } catch (_) {
      return "request failed: HTTP " + res.status;
    }
  }

  function showError(el, text) {
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  // --- "new reply" marks: an idle conversation updated since this browser last showed it.
  const seenKey = (id) => "cvm-seen-" + id;
  function markSeen(id, ts) {
    const t = Date.parse(ts);
    if (!id || isNaN(t)) return;
    const old = Number(localStorage.getItem(seenKey(id)) || 0);
    if (t > old) localStorage.setItem(seenKey(id), String(t));
  }
  function markNew(root) {
    $$(".badge[data-conv]", root).forEach((b) => {
      if (b.dataset.status !== "idle" || b.closest("#status")) return;
      const updated = Date.parse(b.dataset.updated);
      const seen = localStorage.getItem(seenKey(b.dataset.conv));
      const fresh = seen === null ? Date.now() - updated < 86400000 : updated > Number(seen);
      if (fresh) {
        b.classList.add("new", "attn");
        b.textContent = "new reply";
      }
    });
  }

  // --- The page as a phone app: a title badge counting what needs you, and browser
  // notifications (asked for with one tap) for approvals, failures and new replies while a
  // page is open. (Notifications with no page open are the server's: `notify:`.)
  const baseTitle = document.title;
  function setBadge(n) {
    document.title = (n > 0 ? "(" + n + ") " : "") + baseTitle;
  }
  function notify(title, body, tag, url) {
    if (!("Notification" in window) || window.Notification.permission !== "granted") return;
    try {
      const n = new window.Notification(title, { body: body, tag: tag });
      n.onclick = () => {
        window.focus();
        if (url) location.href = url;
        n.close();
      };
    } catch (_) {
      // Some mobile browsers show notifications only from a service worker.
    }
  }
  function notifyButton() {
    if (!("Notification" in window) || window.Notification.permission !== "default" || !csrf) return;
    const top = $("header.top");
    if (!top) return;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link";
    b.id = "notify-on";
    b.textContent = "Notify me";
    b.addEventListener("click", async () => {
      await window.Notification.requestPermission();
      b.remove();
    });
    top.insertBefore(b, $("form.logout", top));
  }
  // List pages: conversations that need you (approval, failure, a reply not seen yet).
  let known = null;
  function attention(root) {
    const items = $$(".badge.attn[data-conv]", root);
    setBadge(items.length);
    const key = (b) => b.dataset.conv + " " + b.dataset.status + " " + b.dataset.updated;
    if (known) {
      items
        .filter((b) => !known.has(key(b)))
        .forEach((b) => {
          const ws = b.closest("[data-ws]");
          const what =
            b.dataset.status === "waiting_for_approval"
              ? "approval needed"
              : b.dataset.status === "failed"
                ? "conversation failed"
                : "new reply";
          notify((ws ? ws.dataset.ws + ": " : "") + what, "", b.dataset.conv, "/c/" + b.dataset.conv);
        });
    }
    known = new Set(items.map(key));
  }

  // --- Lists that refresh themselves.
  function autoRefresh(el) {
    const url = el.dataset.refresh;
    let busy = false;
    setInterval(async () => {
      if (busy || document.hidden || el.querySelector("[data-pending]")) return;
      busy = true;
      try {
        const res = await fetch(url, { credentials: "same-origin" });
        if (res.ok && !res.redirected) {
          el.innerHTML = await res.text();
          markNew(el);
          attention(document);
        }
      } catch (_) {
        // Offline for a moment: try again at the next tick.
      } finally {
        busy = false;
      }
    }, 5000);
  }

  // --- Buttons that POST to the API (start/stop a workspace).
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-post]");
    if (!btn) return;
    if (btn.dataset.confirm && !confirm(btn.dataset.confirm)) return;
    const label = btn.textContent;
    btn.disabled = true;
    btn.dataset.pending = "1";
    btn.textContent = btn.dataset.busy || "…";
    const res = await api("POST", btn.dataset.post).catch(() => null);
    if (res && res.ok) {
      location.reload();
      return;
    }
    btn.disabled = false;
    delete btn.dataset.pending;
    btn.textContent = label;
    alert(res ? await failure(res) : "the server did not answer");
  });

  // --- Workspace page: the command box, output streamed as NDJSON, shown as text.
  function execBox(form) {
    const out = $("#exec-out");
    const exit = $("#exec-exit");
    const input = $("#shell", form);
    const button = $("button", form);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const shell = input.value;
      if (!shell.trim()) return;
      out.textContent = "";
      out.hidden = false;
      exit.hidden = false;
      exit.className = "muted";
      exit.textContent = "running…";
      button.disabled = true;
      const append = (cls, text) => {
        const span = document.createElement("span");
        span.className = cls;
        span.textContent = text;
        out.appendChild(span);
        out.scrollTop = out.scrollHeight;
      };
      try {
        const res = await api("POST", form.dataset.url, { shell });
        if (!res.ok) {
          exit.className = "error";
          exit.textContent = await failure(res);
          return;
        }
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        let finished = false;
        const handle = (line) => {
          if (!line.trim()) return;
          const m = JSON.parse(line);
          if (m.type === "stdout" || m.type === "stderr") append(m.type, m.data);
          else if (m.type === "exit") {
            finished = true;
            exit.className = m.code === 0 ? "ok" : "error";
            exit.textContent = "exit " + m.code;
          } else if (m.type === "error") {
            finished = true;
            exit.className = "error";
            exit.textContent = "error: " + m.message;
          }
        };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            handle(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        }
        handle(buf);
        if (!finished) {
          exit.className = "error";
          exit.textContent = "the connection ended before the command did";
        }
      } catch (e) {
        exit.className = "error";
        exit.textContent = "error: " + e.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- New conversation form.
  function newConversation(form) {
    const err = $(".error", form);
    const button = $("button[type=submit]", form);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError(err, "");
      const label = button.textContent;
      button.disabled = true;
      button.textContent = button.dataset.busy;
      const body = { agent: $("#agent", form).value, ask: $("#ask", form).checked };
      const message = $("#message", form).value;
      if (message.trim()) body.message = message;
      try {
        const res = await api("POST", form.dataset.url, body);
        if (res.ok) {
          const view = await res.json();
          location.href = "/c/" + encodeURIComponent(view.id);
          return;
        }
        showError(err, await failure(res));
      } catch (e) {
        showError(err, "error: " + e.message);
      }
      button.disabled = false;
      button.textContent = label;
    });
  }

  // --- Conversation page: live transcript, composer, interrupt, approvals.
  function conversation(tr) {
    const id = tr.dataset.conv;
    const apiBase = tr.dataset.api;
    let last = Number(tr.dataset.lastSeq || 0);
    const status = $("#status");
    const template = document.createElement("template");

    const nearBottom = () =>
      window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;

    function setStatus(name) {
      const badge = $(".badge", status);
      if (!badge) return;
      badge.dataset.status = name;
      badge.className = "badge cs-" + name + (name === "waiting_for_approval" || name === "failed" ? " attn" : "");
      badge.textContent = name === "waiting_for_approval" ? "needs approval" : name;
    }

    // What an event says about earlier ones.
    function apply(node) {
      if (node.classList.contains("delivered")) {
        $$('.ev.user[data-msg="' + CSS.escape(node.dataset.msg) + '"] .queued', tr).forEach((q) => q.remove());
      } else if (node.classList.contains("decision")) {
        const req = $('.ev.approval[data-approval="' + CSS.escape(node.dataset.approval) + '"]', tr);
        if (req) {
          const actions = $(".actions", req);
          if (actions) actions.remove();
          if (!$(".decided", req)) {
            const p = document.createElement("p");
            const allow = node.dataset.allow === "true";
            p.className = "decided " + (allow ? "ok" : "bad");
            p.textContent = allow ? "Allowed" : "Denied";
            req.appendChild(p);
          }
        }
      } else if (node.classList.contains("status")) {
        setStatus(node.dataset.status);
      }
      if (live && document.hidden) {
        if (node.classList.contains("approval")) {
          unseen++;
          notify(document.title.replace(/^\(\d+\) /, "") + ": approval needed", node.textContent.trim().slice(0, 120), id, location.pathname);
        } else if (node.classList.contains("turnend")) {
          unseen++;
          notify(document.title.replace(/^\(\d+\) /, "") + ": reply", lastReply(), id, location.pathname);
        }
        setBadge(unseen);
      }
      markSeen(id, node.dataset.ts);
    }
    // Events that arrive while the page is hidden count on its title until it is shown.
    let unseen = 0;
    let live = false;
    const lastReply = () => {
      const a = $$(".ev.assistant", tr).pop();
      return a ? a.textContent.trim().split("\n")[0].slice(0, 120) : "";
    };
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) {
        unseen = 0;
        setBadge(0);
      }
    });

    function add(seq, html) {
      if (!(seq > last) || $('[data-seq="' + seq + '"]', tr)) return;
      const follow = nearBottom();
      template.innerHTML = html;
      const node = template.content.firstElementChild;
      if (!node) return;
      tr.appendChild(node);
      last = seq;
      tr.dataset.lastSeq = String(seq);
      apply(node);
      if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    }

    let source = null;
    let backoff = 1000;
    function connect() {
      // After a reconnect the browser sends Last-Event-ID, which the server prefers;
      // `after` covers a fresh EventSource (after a permanent error, e.g. an error page).
      source = new EventSource(tr.dataset.stream + "?after=" + last);
      source.onmessage = (m) => {
        backoff = 1000;
        live = true;
        add(Number(m.lastEventId), m.data);
      };
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(connect, backoff);
          backoff = Math.min(backoff * 2, 30000);
        }
      };
    }
    connect();
    window.addEventListener("pagehide", () => source && source.close());

    const tail = $$(".ev", tr).pop();
    if (tail) markSeen(id, tail.dataset.ts);
    const badge = $(".badge", status);
    if (badge) markSeen(id, badge.dataset.updated);
    window.scrollTo(0, document.documentElement.scrollHeight);

    // Composer: usable while the agent works; the daemon queues messages.
    const form = $("#composer");
    const text = $("#text", form);
    const err = $(".error", form);
    const send = $("button[type=submit]", form);
    async function submit() {
      const value = text.value;
      if (!value.trim()) return;
      showError(err, "");
      send.disabled = true;
      try {
        const res = await api("POST", apiBase + "/messages", { text: value });
        if (res.ok) {
          if (text.value === value) text.value = "";
        } else showError(err, await failure(res));
      } catch (e) {
        showError(err, "not sent: " + e.message);
      } finally {
        send.disabled = false;
        text.focus();
      }
    }
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submit();
    });
    text.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        submit();
      }
    });
    $("#interrupt").addEventListener("click", async () => {
      const res = await api("POST", apiBase + "/interrupt").catch(() => null);
      if (!res || !res.ok) showError(err, res ? await failure(res) : "the server did not answer");
    });
    tr.addEventListener("click", async (ev) => {
      const b = ev.target.closest("button[data-approve]");
      if (!b) return;
      const box = b.parentElement;
      $$("button", box).forEach((x) => (x.disabled = true));
      const res = await api("POST", apiBase + "/approvals/" + encodeURIComponent(b.dataset.approve), {
        allow: b.dataset.allow === "true",
      }).catch(() => null);
      if (!res || !res.ok) {
        $$("button", box).forEach((x) => (x.disabled = false));
        alert(res ? await failure(res) : "the server did not answer");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    markNew(document);
    notifyButton();
    if ($("[data-refresh]")) attention(document);
    $$("[data-refresh]").forEach(autoRefresh);
    const exec = $("#exec");
    if (exec) execBox(exec);
    const nc = $("#new-conv");
    if (nc) newConversation(nc);
    const tr = $("#transcript");
    if (tr) conversation(tr);
  });
})();
