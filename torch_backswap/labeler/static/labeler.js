// backswap label — the page. Talks to torch_backswap/labeler/server.py (JSON API, same origin).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    image: $("image"), grid: $("grid"), frame: $("frame"), done: $("done"),
    labeled: $("labeled"), total: $("total"), model: $("model"), imageId: $("image-id"),
    source: $("source"), status: $("status"), out: $("out"),
  };
  const MAX_SIDE = () => Math.max(256, Math.min(window.innerWidth - 460, window.innerHeight - 120, 900));

  const st = {
    S: 0, id: null, mask: [], undo: [], dirty: false,
    back: [], fwd: [],          // navigation history (ids) for previous / next
    paint: null, last: -1,      // drag state: value being painted, last cell index
    busy: false,
  };

  // ------------------------------------------------------------------ server calls
  async function api(path) {
    const r = await fetch(path, { cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }
  async function post(path, payload) {
    const r = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }
  const imgUrl = (id) => "/img/" + id.split("/").map(encodeURIComponent).join("/");

  function status(text, kind = "") {
    el.status.textContent = text;
    el.status.className = kind;
  }

  // ------------------------------------------------------------------ state / counter
  function showState(s) {
    el.labeled.textContent = String(s.labeled);
    const n = s.images_total !== null ? `${s.images_total}` : `${s.images_known}+`;
    el.total.textContent = `of ${n} images` + (s.skipped ? ` · ${s.skipped} skipped` : "");
    el.out.textContent = `${s.out} (${s.format} format)`;
    if (s.segmenter) {
      let m = `segmenter v${s.model_version} · ${s.active ? "most uncertain image next" : "folder order"}`;
      if (s.retrain_every) m += s.retraining ? " · retraining…" : ` · retrains every ${s.retrain_every} labels`;
      if (s.retrain_error) m += ` · retraining failed: ${s.retrain_error}`;
      el.model.textContent = m;
    } else {
      el.model.textContent = "folder order";
    }
  }
  async function refreshState() {
    const s = await api("/api/state");
    showState(s);
    return s;
  }

  // ------------------------------------------------------------------ grid
  function buildGrid(S) {
    el.grid.textContent = "";
    el.grid.style.gridTemplateColumns = `repeat(${S}, 1fr)`;
    el.grid.style.gridTemplateRows = `repeat(${S}, 1fr)`;
    for (let i = 0; i < S * S; i++) {
      const c = document.createElement("div");
      c.className = "cell";
      c.dataset.index = String(i);
      el.grid.appendChild(c);
    }
  }
  function render() {
    const cells = el.grid.children;
    for (let i = 0; i < cells.length; i++) cells[i].classList.toggle("on", st.mask[i] === 1);
  }
  function setCell(i, v) {
    if (st.mask[i] !== v) { st.mask[i] = v; st.dirty = true; el.grid.children[i].classList.toggle("on", v === 1); }
  }
  function pushUndo() {
    st.undo.push(st.mask.slice());
    if (st.undo.length > 200) st.undo.shift();
  }
  function cellAt(ev) {
    const r = el.grid.getBoundingClientRect();
    const col = Math.floor(((ev.clientX - r.left) / r.width) * st.S);
    const row = Math.floor(((ev.clientY - r.top) / r.height) * st.S);
    if (col < 0 || row < 0 || col >= st.S || row >= st.S) return -1;
    return row * st.S + col;
  }
  // paint every cell on the straight line between two cells, so fast drags leave no gaps
  function paintLine(a, b, v) {
    const S = st.S;
    let r0 = Math.floor(a / S), c0 = a % S;
    const r1 = Math.floor(b / S), c1 = b % S;
    const steps = Math.max(Math.abs(r1 - r0), Math.abs(c1 - c0));
    for (let k = 0; k <= steps; k++) {
      const t = steps === 0 ? 0 : k / steps;
      setCell(Math.round(r0 + (r1 - r0) * t) * S + Math.round(c0 + (c1 - c0) * t), v);
    }
  }

  el.grid.addEventListener("pointerdown", (ev) => {
    if (st.id === null) return;
    const i = cellAt(ev);
    if (i < 0) return;
    ev.preventDefault();
    pushUndo();
    st.paint = ev.button === 2 ? 0 : (st.mask[i] === 1 ? 0 : 1);
    st.last = i;
    setCell(i, st.paint);
    try { el.grid.setPointerCapture(ev.pointerId); } catch (_) { /* synthetic events */ }
  });
  el.grid.addEventListener("pointermove", (ev) => {
    if (st.paint === null) return;
    const i = cellAt(ev);
    if (i < 0 || i === st.last) return;
    paintLine(st.last, i, st.paint);
    st.last = i;
  });
  const endStroke = () => { st.paint = null; st.last = -1; };
  el.grid.addEventListener("pointerup", endStroke);
  el.grid.addEventListener("pointercancel", endStroke);
  window.addEventListener("pointerup", endStroke);
  el.grid.addEventListener("contextmenu", (ev) => ev.preventDefault());

  // ------------------------------------------------------------------ showing an image
  function fitImage() {
    const nw = el.image.naturalWidth, nh = el.image.naturalHeight;
    if (!nw || !nh) return;
    const scale = MAX_SIDE() / Math.max(nw, nh);
    el.image.style.width = `${Math.round(nw * scale)}px`;
    el.image.style.height = `${Math.round(nh * scale)}px`;
    el.image.classList.toggle("pixelated", scale >= 3);
  }
  el.image.addEventListener("load", fitImage);
  window.addEventListener("resize", fitImage);

  async function show(id) {
    if (id === null) {
      st.id = null;
      el.frame.hidden = true; el.done.hidden = false;
      el.imageId.textContent = ""; el.source.textContent = "";
      history.replaceState(null, "", location.pathname);
      document.body.dataset.current = "";
      return;
    }
    const info = await api("/api/image?id=" + encodeURIComponent(id));
    st.id = info.id;
    st.mask = Array.from(info.mask, (ch) => (ch === "1" ? 1 : 0));
    st.undo = []; st.dirty = false;
    el.frame.hidden = false; el.done.hidden = true;
    await new Promise((resolve) => {
      el.image.onload = () => { fitImage(); resolve(); };
      el.image.onerror = () => { status(`could not load image ${info.id}`, "error"); resolve(); };
      el.image.src = imgUrl(info.id);
    });
    render();
    el.imageId.textContent = info.id;
    let src = { label: "saved label", segmenter: "pre-filled by the segmenter — correct it", empty: "new image" }[info.source];
    if (info.uncertainty !== null) src += ` (uncertainty ${info.uncertainty.toFixed(2)})`;
    if (info.skipped) src += " · skipped earlier";
    el.source.textContent = src;
    history.replaceState(null, "", "#" + encodeURIComponent(info.id));
    document.body.dataset.current = info.id;   // lets tests wait for the page to settle
  }

  // ------------------------------------------------------------------ actions
  async function guarded(fn) {
    if (st.busy) return;
    st.busy = true;
    document.body.dataset.busy = "1";
    try { await fn(); } catch (err) { status(String(err.message || err), "error"); }
    finally { st.busy = false; document.body.dataset.busy = ""; }
  }
  async function saveCurrent() {
    const r = await post("/api/label", { id: st.id, mask: st.mask.join("") });
    st.dirty = false;
    el.labeled.textContent = String(r.labeled);
    status(`saved ${st.id}`, "ok");
  }
  async function goNext(save) {
    if (st.id !== null) {
      if (save) await saveCurrent();
      else await post("/api/skip", { id: st.id });
    }
    let target = null;
    while (st.fwd.length && target === null) target = st.fwd.pop();
    if (target === null) target = (await api("/api/next" + (st.id ? "?current=" + encodeURIComponent(st.id) : ""))).id;
    if (st.id !== null) st.back.push(st.id);
    await show(target);
    await refreshState();
  }
  async function goPrev() {
    if (st.id !== null && st.dirty) await saveCurrent();
    let target = st.back.length ? st.back.pop() : null;
    if (target === null && st.id !== null) target = (await api(`/api/neighbor?id=${encodeURIComponent(st.id)}&step=-1`)).id;
    if (target === null) { status("no previous image"); return; }
    if (st.id !== null) st.fwd.push(st.id);
    await show(target);
    await refreshState();
  }
  function mutate(fn) {
    if (st.id === null) return;
    pushUndo(); fn(); render();
  }
  const actions = {
    next: () => guarded(() => goNext(true)),
    skip: () => guarded(() => goNext(false)),
    prev: () => guarded(goPrev),
    clear: () => mutate(() => { st.mask.fill(0); st.dirty = true; }),
    fill: () => mutate(() => { st.mask.fill(1); st.dirty = true; }),
    undo: () => {
      if (!st.undo.length) { status("nothing to undo"); return; }
      st.mask = st.undo.pop(); st.dirty = true; render();
    },
    toggle: () => el.grid.classList.toggle("hidden-cells"),
  };
  for (const name of ["next", "skip", "prev", "clear", "fill", "undo"]) {
    $(name).addEventListener("click", (ev) => { ev.currentTarget.blur(); actions[name](); });
  }
  const KEYS = {
    n: "next", ArrowRight: "next", Enter: "next", p: "prev", ArrowLeft: "prev",
    s: "skip", c: "clear", f: "fill", z: "undo", u: "undo", h: "toggle",
  };
  document.addEventListener("keydown", (ev) => {
    if (ev.altKey || ev.metaKey || (ev.ctrlKey && ev.key.toLowerCase() !== "z")) return;
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    const action = KEYS[key];
    if (!action) return;
    ev.preventDefault();
    actions[action]();
  });

  // ------------------------------------------------------------------ start
  async function start() {
    const s = await refreshState();
    st.S = s.grid_size;
    buildGrid(st.S);
    let id = location.hash.length > 1 ? decodeURIComponent(location.hash.slice(1)) : null;
    if (id !== null) {
      try { await show(id); } catch (_) { id = null; }
    }
    if (id === null) await show((await api("/api/next")).id);
    await refreshState();
    if (s.segmenter && s.retrain_every) setInterval(() => refreshState().catch(() => {}), 5000);
    document.body.dataset.ready = "1";
  }
  start().catch((err) => status(String(err.message || err), "error"));
})();
