// coord web: the token, actions, and the live-swap of server-rendered fragments.
// The token comes in the URL's fragment (#token=…), which browsers never send to a server;
// it is kept in sessionStorage and sent only as an Authorization header by fetch().
"use strict";
(function () {
  const KEY = "coord-web-token";

  function takeToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function token() {
    return sessionStorage.getItem(KEY) || "";
  }

  function toast(message, bad) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.classList.toggle("bad", !!bad);
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, bad ? 12000 : 6000);
  }

  async function act(action, body) {
    const response = await fetch("/api/actions/" + encodeURIComponent(action), {
      method: "POST",
      credentials: "omit",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token() },
      body: JSON.stringify(body),
    });
    let data;
    try {
      data = await response.json();
    } catch (e) {
      data = { ok: false, error: response.statusText };
    }
    data.status = response.status;
    return data;
  }

  function bodyOf(button) {
    const d = button.dataset;
    const body = {};
    if (d.assignment) body.assignment = d.assignment;
    if (d.repo) body.repo = d.repo;
    if (d.issue) body.issue = Number(d.issue);
    if (d.proposal) body.proposal = d.proposal;
    return body;
  }

  // One click arms a button, a second one within 4 s acts: no action on a stray click.
  async function onClick(event) {
    const button = event.target.closest("button.act");
    if (!button || button.disabled) return;
    if (!token()) {
      toast("read-only: open the address coord web printed (with #token=…) to act", true);
      return;
    }
    if (!button.classList.contains("armed")) {
      button.classList.add("armed");
      button.dataset.label = button.textContent;
      button.textContent = "sure? " + button.dataset.label;
      setTimeout(() => disarm(button), 4000);
      return;
    }
    disarm(button);
    button.classList.add("busy");
    button.disabled = true;
    try {
      const result = await act(button.dataset.action, bodyOf(button));
      toast(result.ok ? result.message : "refused: " + result.error, !result.ok);
    } catch (e) {
      toast("the server did not answer: " + e, true);
    } finally {
      button.classList.remove("busy");
      button.disabled = false;
      coord.refresh();
    }
  }

  function disarm(button) {
    if (button.classList.contains("armed")) {
      button.classList.remove("armed");
      button.textContent = button.dataset.label || button.textContent;
    }
  }

  function showAuth() {
    const el = document.getElementById("auth");
    if (!el) return;
    const ok = !!token();
    el.textContent = ok ? "actions enabled" : "read-only";
    el.classList.toggle("armed", ok);
  }

  // Swap a fragment in (rendered by the server, escaped there), unless a person is in the
  // middle of an action on it.
  const swaps = {};
  async function swap(id, url) {
    const el = document.getElementById(id);
    if (!el) return;
    if (el.querySelector(".act.armed, .act.busy")) {
      swaps[id] = url;
      setTimeout(() => { if (swaps[id]) { delete swaps[id]; swap(id, url); } }, 1000);
      return;
    }
    const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (response.ok) el.innerHTML = await response.text();
  }

  // A fresh snapshot each time the poller publishes one.
  function onBoard(handler) {
    const source = new EventSource("/api/board/stream");
    source.addEventListener("board", (e) => handler(JSON.parse(e.data).version));
    return source;
  }

  takeToken();
  window.coord = { token, toast, act, swap, onBoard, refresh: () => {} };
  document.addEventListener("DOMContentLoaded", () => {
    showAuth();
    document.body.addEventListener("click", onClick);
  });
})();
