// Live pages: one EventSource per page; each relevant change re-renders the page's live
// block from the server (debounced). No polling, no framework.
(function () {
  const topic = document.body.dataset.topic;
  const live = document.getElementById("live");
  const dot = document.getElementById("live-dot");
  if (!topic || !live || !window.EventSource) return;
  let timer = null, busy = false, again = false;
  function editing() {
    const a = document.activeElement;
    if (a && live.contains(a) && /^(TEXTAREA|INPUT|SELECT)$/.test(a.tagName)) return true;
    return [...live.querySelectorAll("textarea, input[type=text], input:not([type])")]
      .some((el) => el.value);
  }
  async function refresh() {
    if (editing()) { timer = setTimeout(refresh, 500); return; }
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(location.href, { headers: { "X-Board-Partial": "1" },
                                             credentials: "same-origin" });
      if (r.ok) {
        const box = document.createElement("div");
        box.innerHTML = await r.text();
        const fresh = box.querySelector("#live");
        if (fresh) { live.replaceChildren(...fresh.childNodes); }
        document.body.dataset.refreshed = String(Date.now());
      }
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 80); }
  const es = new EventSource("/events?topic=" + encodeURIComponent(topic));
  es.onopen = () => { dot && dot.classList.add("on"); document.body.dataset.live = "1"; };
  es.onerror = () => { dot && dot.classList.remove("on"); };
  es.onmessage = schedule;
})();
