// One assignment: its header (swapped in on each snapshot) and its live stream of events,
// resumed from the last line shown (the browser sends Last-Event-ID when it reconnects).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const head = document.getElementById("head");
  const id = head.dataset.assignment;
  const list = document.getElementById("stream");
  const state = document.getElementById("stream-state");
  const all = document.getElementById("all");
  const follow = document.getElementById("follow");
  let last = 0;
  let source = null;

  const refresh = () => coord.swap("head", "/fragment/a/" + encodeURIComponent(id));
  coord.refresh = refresh;
  coord.onBoard(refresh);

  function clock(at) {
    const d = new Date(at * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function append(at, kind, text) {
    const line = document.createElement("div");
    line.className = "line kind-" + kind.replace(/[^a-z-]/g, "");
    if (at) {
      const t = document.createElement("time");
      t.textContent = clock(at);
      line.appendChild(t);
    }
    const span = document.createElement("span");
    span.textContent = text;
    line.appendChild(span);
    list.appendChild(line);
    if (follow.checked) list.scrollTop = list.scrollHeight;
  }

  function open() {
    const url = "/api/a/" + encodeURIComponent(id) + "/stream?after=" + last +
      (all.checked ? "&all=1" : "");
    source = new EventSource(url);
    source.addEventListener("open", () => {
      state.textContent = "live";
      state.classList.add("live");
    });
    source.addEventListener("line", (e) => {
      const offset = Number(e.lastEventId);
      if (offset <= last) return;  // already shown
      last = offset;
      const data = JSON.parse(e.data);
      for (const entry of data.entries) append(data.at, entry.kind, entry.text);
    });
    source.addEventListener("gap", (e) => {
      const n = JSON.parse(e.data).dropped;
      append(0, "gap", "[gap] " + n + " earlier lines are not held here (coord log " + id + ")");
    });
    source.addEventListener("end", (e) => {
      const data = JSON.parse(e.data);
      source.close();
      state.textContent = "ended";
      state.classList.remove("live");
      if (data.error) {
        // Reading stopped before the run ended (its machine, or no events yet): try again.
        append(0, "end-error", "[stopped] " + data.error + "; trying again in 5 s");
        setTimeout(open, 5000);
      } else {
        append(0, "end", "[end] the run is over (" + data.state + ")");
      }
      refresh();
    });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        state.textContent = "reconnecting…";
        state.classList.remove("live");
      }
    });
  }

  all.addEventListener("change", () => {
    if (source) source.close();
    list.textContent = "";
    last = 0;
    open();
  });
  open();
});
