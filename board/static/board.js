// Live pages: one EventSource per page; a relevant change re-renders the page's live block
// from the server. No polling, no framework. Pages following one task refresh at once;
// pages following everything (tasks, reviews, escalations) at most twice a second.
(function () {
  const topic = document.body.dataset.topic;
  const live = document.getElementById("live");
  const dot = document.getElementById("live-dot");
  if (!topic || !live || !window.EventSource) return;
  const gap = /^(task|subtask):/.test(topic) ? 0 : 500;
  let timer = null, busy = false, again = false, dirty = false, last = 0;
  // A person filling in a form in the live block keeps it: refreshes wait until they leave.
  live.addEventListener("input", () => { dirty = true; });
  live.addEventListener("change", () => { dirty = true; });
  function editing() {
    const a = document.activeElement;
    if (a && live.contains(a) && /^(TEXTAREA|INPUT|SELECT)$/.test(a.tagName)) return true;
    return dirty;
  }
  function schedule(wait) {
    if (timer) return; // a refresh is already planned, and it reads everything
    const delay = wait !== undefined ? wait : Math.max(60, last + gap - Date.now());
    timer = setTimeout(() => { timer = null; refresh(); }, delay);
  }
  async function refresh() {
    if (editing()) { schedule(500); return; }
    if (busy) { again = true; return; }
    busy = true;
    last = Date.now();
    try {
      const r = await fetch(location.href, { headers: { "X-Board-Partial": "1" },
                                             credentials: "same-origin" });
      const html = r.ok ? await r.text() : "";
      // Someone started typing while this was on its way: keep their form, try later.
      if (editing()) { again = false; schedule(500); return; }
      if (r.ok) {
        const box = document.createElement("div");
        box.innerHTML = html;
        const fresh = box.querySelector("#live");
        if (fresh) { live.replaceChildren(...fresh.childNodes); }
        document.body.dataset.refreshed = String(Date.now());
      }
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  const es = new EventSource("/events?topic=" + encodeURIComponent(topic));
  // Changes between the page's render and this stream's start are caught up on open
  // (and after a reconnect) with one refresh.
  es.onopen = () => {
    dot && dot.classList.add("on");
    document.body.dataset.live = "1";
    schedule();
  };
  es.onerror = () => { dot && dot.classList.remove("on"); };
  es.onmessage = () => schedule();
})();
