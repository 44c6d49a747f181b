// The content-ops console: plain JS over the origin's API.
//   sign in      -> the key in sessionStorage, sent as Authorization: Bearer
//   uploads      -> tus-js-client against /v1/uploads (resumable; options as metadata)
//   asset list   -> one EventSource on /v1/live (snapshot, then changes only)
//   asset page   -> GET /v1/assets/{id}; hls.js preview; retry; delete (confirmed)
"use strict";

(() => {
  const KEY = "cdlc.console.key";
  const $ = (id) => document.getElementById(id);
  const assets = new Map();   // id -> asset JSON, kept current by the live stream
  let live = null;            // EventSource
  let hls = null;             // the preview's Hls instance
  let chart = null;           // uPlot instance
  let shownAsset = null;      // id on the asset page

  // -- helpers ----------------------------------------------------------------------
  const key = () => sessionStorage.getItem(KEY) || "";
  const authHeaders = () => ({ Authorization: `Bearer ${key()}` });

  async function api(path, options = {}) {
    const resp = await fetch(path, {
      ...options, headers: { ...authHeaders(), ...(options.headers || {}) },
    });
    if (resp.status === 401) { signOut("The key was refused; sign in again."); }
    return resp;
  }

  async function problemText(resp) {
    try { return (await resp.json()).title || `HTTP ${resp.status}`; }
    catch { return `HTTP ${resp.status}`; }
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  const seconds = (s) => (s ? `${s.toFixed(1)} s` : "–");
  const kbps = (b) => (b ? `${Math.round(b / 1000)} kbit/s` : "–");
  const percent = (p) => `${Math.round((p || 0) * 100)} %`;

  function stateBadge(state) {
    return el("span", { class: `state state-${state}`, text: state });
  }

  // -- sign in ----------------------------------------------------------------------
  async function signIn(candidate) {
    const resp = await fetch("/v1/console/whoami", {
      headers: { Authorization: `Bearer ${candidate}` },
    });
    if (resp.status !== 204) {
      $("signin-error").textContent = resp.status === 401
        ? "That key was refused." : `Sign-in failed: ${await problemText(resp)}`;
      $("api-key").focus();
      return;
    }
    sessionStorage.setItem(KEY, candidate);
    $("signin-error").textContent = "";
    start();
  }

  function signOut(message = "") {
    sessionStorage.removeItem(KEY);
    if (live) { live.close(); live = null; }
    stopPreview();
    $("session").hidden = true;
    $("list-view").hidden = true;
    $("asset-view").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message;
    $("api-key").value = "";
    $("api-key").focus();
  }

  function start() {
    $("signin").hidden = true;
    $("session").hidden = false;
    connectLive();
    route();
  }

  // -- live asset list ----------------------------------------------------------------
  function connectLive() {
    if (live) live.close();
    live = new EventSource(`/v1/live?key=${encodeURIComponent(key())}`);
    live.addEventListener("open", () => { $("live-state").textContent = "live"; });
    live.addEventListener("error", () => {
      $("live-state").textContent = "reconnecting…";  // EventSource retries by itself
    });
    live.addEventListener("snapshot", (ev) => {
      assets.clear();
      for (const a of JSON.parse(ev.data).items) assets.set(a.id, a);
      renderList();
      refreshAssetPage();
    });
    live.addEventListener("asset", (ev) => {
      const a = JSON.parse(ev.data);
      assets.set(a.id, a);
      renderRow(a);
      if (a.id === shownAsset) refreshAssetPage();
    });
    live.addEventListener("deleted", (ev) => {
      const { id } = JSON.parse(ev.data);
      assets.delete(id);
      const row = document.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
      if (row) row.remove();
      toggleEmpty();
    });
  }

  function toggleEmpty() {
    const empty = assets.size === 0;
    $("assets-empty").hidden = !empty;
    $("assets").hidden = empty;
  }

  function renderList() {
    const body = $("asset-rows");
    body.replaceChildren();
    for (const id of [...assets.keys()].sort()) renderRow(assets.get(id));
    toggleEmpty();
  }

  function renderRow(a) {
    const body = $("asset-rows");
    const link = el("a", { href: `#/assets/${encodeURIComponent(a.id)}`, text: a.id });
    const bar = el("progress", { max: "1", value: String(a.progress || 0),
                                 "aria-label": `Progress of ${a.id}` });
    const row = el("tr", { "data-id": a.id, "data-state": a.state },
      el("th", { scope: "row" }, link),
      el("td", { text: a.source_name || "–" }),
      el("td", {}, stateBadge(a.state)),
      el("td", { class: "progress" }, bar, el("span", { text: percent(a.progress) })),
      el("td", { text: seconds(a.duration) }));
    const old = body.querySelector(`tr[data-id="${CSS.escape(a.id)}"]`);
    if (old) { old.replaceWith(row); }
    else {
      const next = [...body.children].find((r) => r.dataset.id > a.id);
      body.insertBefore(row, next || null);
    }
    toggleEmpty();
  }

  // -- uploads --------------------------------------------------------------------------
  function jobOptions() {
    const meta = {};
    const ladder = $("opt-ladder").value.trim();
    if (ladder) meta.ladder = ladder;
    if ($("opt-preset").value) meta.preset = $("opt-preset").value;
    if ($("opt-segment").value) meta.segment_seconds = $("opt-segment").value;
    meta.copy = $("opt-copy").checked ? "true" : "false";
    return meta;
  }

  function uploadFile(file) {
    const bar = el("progress", { max: "1", value: "0", "aria-label": `Upload of ${file.name}` });
    const status = el("span", { class: "status", role: "status", text: "starting…" });
    const cancel = el("button", { type: "button", text: "Cancel" });
    const item = el("li", { class: "upload", "data-file": file.name },
      el("span", { class: "name", text: file.name }), bar, status, cancel);
    $("uploads").append(item);
    let assetId = "";
    const upload = new tus.Upload(file, {
      endpoint: "/v1/uploads",
      headers: authHeaders(),
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata: { filename: file.name, ...jobOptions() },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onAfterResponse: (_req, res) => {
        const id = res.getHeader("Cdlc-Asset-Id");
        if (id) assetId = id;
      },
      onProgress: (sent, total) => {
        bar.value = total ? sent / total : 0;
        status.textContent = `${percent(total ? sent / total : 0)} uploaded`;
      },
      onSuccess: () => {
        bar.value = 1;
        status.textContent = "";
        status.append("uploaded; job started: ",
          el("a", { href: `#/assets/${encodeURIComponent(assetId)}`, text: assetId }));
        item.dataset.done = "true";
        cancel.remove();
      },
      onError: (err) => {
        const res = err.originalResponse;
        let text = err.message;
        if (res) {
          try { text = JSON.parse(res.getBody()).title || text; } catch { /* keep */ }
        }
        status.textContent = `failed: ${text}`;
        item.classList.add("failed");
      },
    });
    cancel.addEventListener("click", () => {
      upload.abort(true).then(() => { status.textContent = "cancelled"; cancel.remove(); });
    });
    // Resume an upload of the same file interrupted earlier (a reload, a lost line).
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  }

  function uploadAll(files) { for (const f of files) uploadFile(f); }

  function setupDrop() {
    const drop = $("drop");
    const input = $("file-input");
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); }
    });
    input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    }
    for (const name of ["dragleave", "drop"]) {
      drop.addEventListener(name, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      uploadAll(ev.dataTransfer.files);
    });
  }

  // -- asset page -------------------------------------------------------------------
  function stopPreview() {
    if (hls) { hls.destroy(); hls = null; }
    const video = $("preview");
    video.removeAttribute("src");
    video.load();
    video.dataset.source = "";
  }

  async function showAsset(id) {
    shownAsset = id;
    $("list-view").hidden = true;
    $("asset-view").hidden = false;
    $("asset-title").textContent = id;
    document.title = `${id} · cdlc-stream console`;
    await refreshAssetPage(true);
    $("asset-title").focus?.();
  }

  async function refreshAssetPage(first = false) {
    if (!shownAsset || $("asset-view").hidden) return;
    const id = shownAsset;
    const resp = await api(`/v1/assets/${encodeURIComponent(id)}`);
    if (resp.status === 404) {
      $("asset-state").replaceChildren(stateBadge("deleted"));
      $("asset-error").textContent = "This asset no longer exists.";
      $("delete").disabled = true;
      $("retry").disabled = true;
      stopPreview();
      return;
    }
    if (!resp.ok) { $("asset-error").textContent = await problemText(resp); return; }
    const a = await resp.json();
    if (id !== shownAsset) return;
    $("asset-state").replaceChildren(stateBadge(a.state));
    $("asset-progress").value = a.state === "ready" ? 1 : (a.progress || 0);
    $("asset-duration").textContent = seconds(a.duration);
    $("asset-source").textContent = a.source_name || "–";
    $("asset-error").textContent = a.error || "";
    $("retry").disabled = a.state !== "failed";
    $("delete").disabled = false;
    renderRenditions(a.renditions || []);
    renderPlayback(a);
    if (a.state === "ready") await startPreview(id);
    else if (first) stopPreview();
  }

  function renderRenditions(renditions) {
    const rows = renditions.map((r) => el("tr", {},
      el("th", { scope: "row", text: r.id }),
      el("td", { text: r.kind === "video" ? `${r.width}×${r.height}` :
                       `${r.channels} ch, ${r.sample_rate} Hz` }),
      el("td", { text: `${kbps(r.bitrate)} (avg ${kbps(r.avg_bitrate)}, peak ${kbps(r.peak_bitrate)})` }),
      el("td", { text: r.codec_string || r.codec }),
      el("td", { text: String(r.segments ?? "–") })));
    $("rendition-rows").replaceChildren(...rows);
    drawChart(renditions);
  }

  let charted = [];
  function drawChart(renditions) {
    charted = renditions;
    const box = $("chart");
    if (chart) { chart.destroy(); chart = null; }
    box.replaceChildren();
    if (!renditions.length || typeof uPlot === "undefined") return;
    const xs = renditions.map((_, i) => i);
    const avg = renditions.map((r) => Math.round((r.avg_bitrate || r.bitrate) / 1000));
    const peak = renditions.map((r) => Math.round((r.peak_bitrate || r.bitrate) / 1000));
    const bars = uPlot.paths.bars({ size: [0.5, 60] });
    chart = new uPlot({
      width: Math.min(box.clientWidth || 600, 720), height: 200,
      title: "Bitrate per rendition (kbit/s)",
      scales: { x: { time: false, range: [-0.5, renditions.length - 0.5] },
                y: { range: (_u, _min, max) => [0, Math.ceil(max * 1.1)] } },
      axes: [{ splits: () => xs, values: (_u, ticks) => ticks.map((t) => renditions[t]?.id ?? "") },
             {}],
      series: [{}, { label: "average", stroke: "#1f5fbf", fill: "rgba(31,95,191,.35)", paths: bars },
               { label: "peak", stroke: "#8a3b00", paths: () => null,
                 points: { show: true, size: 9, fill: "#8a3b00" } }],
    }, [xs, avg, peak], box);
  }

  function renderPlayback(a) {
    const urls = [["HLS", a.playback.hls], ["DASH", a.playback.dash]];
    $("playback").replaceChildren(...urls.map(([name, path]) => {
      const abs = new URL(path, location.href).href;
      return el("li", {}, el("span", { class: "label", text: `${name}: ` }),
        el("a", { href: abs, text: abs }));
    }));
  }

  async function startPreview(id) {
    const video = $("preview");
    if (video.dataset.source === id) return;
    const resp = await api(`/v1/console/preview/${encodeURIComponent(id)}`);
    if (!resp.ok) return;
    const { hls: src } = await resp.json();
    stopPreview();
    video.dataset.source = id;
    if (window.Hls && Hls.isSupported()) {
      hls = new Hls({ enableWorker: true });
      hls.loadSource(src);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = src;  // Safari plays HLS itself
    }
  }

  async function retry() {
    const resp = await api(`/v1/assets/${encodeURIComponent(shownAsset)}/retry`,
                           { method: "POST" });
    $("asset-error").textContent = resp.ok ? "" : await problemText(resp);
    await refreshAssetPage();
  }

  function askDelete() {
    const dialog = $("confirm");
    $("confirm-title").textContent = `Delete ${shownAsset}?`;
    dialog.returnValue = "";
    dialog.showModal();
  }

  async function doDelete() {
    const id = shownAsset;
    const resp = await api(`/v1/assets/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (resp.status === 204 || resp.status === 404) {
      stopPreview();
      location.hash = "#/";
      return;
    }
    $("asset-error").textContent = await problemText(resp);
  }

  // -- routing --------------------------------------------------------------------------
  function route() {
    if (!key()) { signOut(); return; }
    const m = location.hash.match(/^#\/assets\/(.+)$/);
    if (m) { showAsset(decodeURIComponent(m[1])); return; }
    shownAsset = null;
    stopPreview();
    document.title = "cdlc-stream console";
    $("asset-view").hidden = true;
    $("list-view").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      signIn($("api-key").value.trim());
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("retry").addEventListener("click", retry);
    $("delete").addEventListener("click", askDelete);
    $("confirm").addEventListener("close", () => {
      if ($("confirm").returnValue === "delete") doDelete();
    });
    $("asset-title").setAttribute("tabindex", "-1");
    setupDrop();
    window.addEventListener("hashchange", route);
    let resizing = 0;
    window.addEventListener("resize", () => {  // the chart is drawn to its box's width
      clearTimeout(resizing);
      resizing = setTimeout(() => { if (charted.length) drawChart(charted); }, 150);
    });
    if (key()) start(); else signOut();
  });
})();
