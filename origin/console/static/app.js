// The content-ops console: plain JS over the origin's API.
//   sign in      -> the key in sessionStorage, sent as Authorization: Bearer
//   uploads      -> tus-js-client against /v1/uploads (resumable; options as metadata)
//   asset list   -> one EventSource on /v1/live (snapshot, then changes only)
//   asset page   -> GET /v1/assets/{id}; hls.js preview; retry; delete (confirmed);
//                   GET /v1/assets/{id}/stats (a 404 means no stats)
//   webhooks     -> /v1/webhooks: list, add (the secret shown once), delete (confirmed),
//                   and one subscription's delivery log (/v1/webhooks/{id}/deliveries)
"use strict";

(() => {
  const KEY = "cdlc.console.key";
  const $ = (id) => document.getElementById(id);
  const assets = new Map();   // id -> asset JSON, kept current by the live stream
  let live = null;            // EventSource
  let hls = null;             // the preview's Hls instance
  let chart = null;           // uPlot instance
  let statsChart = null;      // uPlot instance of the stats' seconds per rendition
  let shownAsset = null;      // id on the asset page
  let shownHook = null;       // subscription whose delivery log is shown
  let hookTimer = 0;          // refreshes the delivery log while it is open
  let onConfirm = null;       // what the confirm dialog's "Delete" does
  // Delivery attempts go out 5 s, 10 s, 20 s... apart; while the log is open it is
  // read again this often (one request for the whole log, not one per delivery).
  const HOOK_REFRESH_MS = 3000;

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
  const ratio = (p) => (p == null ? "–" : `${(p * 100).toFixed(1)} %`);
  const secondsOrDash = (s) => (s == null ? "–" : `${s.toFixed(2)} s`);
  // Unix seconds as an unambiguous UTC time, the way the server's logs write it.
  const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ")
    .replace(/\.\d+Z$/, " UTC") : "–");

  function duration(s) {
    if (!s) return "0 s";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${Math.round(r)} s`;
    return `${r.toFixed(1)} s`;
  }

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
    $("webhooks-view").hidden = true;
    stopHookRefresh();
    forgetSecret();
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
    live.addEventListener("unavailable", (ev) => {
      // The server cannot read the asset list now: what is shown is kept, marked
      // stale, until the snapshot that follows the outage.
      const { detail } = JSON.parse(ev.data);
      $("live-state").textContent = `not live: ${detail}`;
      $("assets-empty").textContent = "The asset list cannot be read now.";
    });
    live.addEventListener("snapshot", (ev) => {
      $("live-state").textContent = "live";
      $("assets-empty").textContent = "No assets yet.";
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
    if ($("opt-vmaf").checked) meta.vmaf = "true";
    if ($("opt-codecs").value) meta.codecs = $("opt-codecs").value;
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
      // A lost line or a restarted `cdlc serve`: HEAD the upload again and go on
      // from the server's offset, for up to about two minutes.
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000, 30000, 45000],
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
        item.dataset.failed = "true";
        cancel.remove();
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
    video.removeAttribute("poster");
    video.load();
    video.dataset.source = "";
  }

  async function showAsset(id) {
    shownAsset = id;
    $("list-view").hidden = true;
    $("webhooks-view").hidden = true;
    $("asset-view").hidden = false;
    $("asset-title").textContent = id;
    showNoStats("Loading viewing stats…");
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
      showNoStats();
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
    if (first || a.state === "ready") loadStats(id);
    if (a.state === "ready") await startPreview(id);
    else if (first) stopPreview();
  }

  function renderRenditions(renditions) {
    const rows = renditions.map((r) => el("tr", {},
      el("th", { scope: "row", text: r.id }),
      el("td", { text: r.kind === "video" ? `${r.width}×${r.height}` :
                       r.kind === "image" ? `${r.tiles} tiles of ${r.width}×${r.height}` :
                       r.kind === "text" ? r.language :
                       `${r.channels} ch, ${r.sample_rate} Hz` }),
      el("td", { text: `${kbps(r.bitrate)} (avg ${kbps(r.avg_bitrate)}, peak ${kbps(r.peak_bitrate)})` }),
      el("td", { text: r.codec_string || r.codec }),
      el("td", { text: r.vmaf ? r.vmaf.toFixed(1) : "–" }),
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

  // -- viewing stats ----------------------------------------------------------------------
  function showNoStats(text = "No viewing stats yet.") {
    $("stats").hidden = true;
    $("stats-empty").hidden = false;
    $("stats-empty").textContent = text;
    if (statsChart) { statsChart.destroy(); statsChart = null; }
    chartedStats = [];
  }

  async function loadStats(id) {
    const resp = await api(`/v1/assets/${encodeURIComponent(id)}/stats`);
    if (id !== shownAsset) return;
    // 404: the asset is unknown to the stats (or no watch-event intake is installed).
    if (resp.status === 404) { showNoStats(); return; }
    if (!resp.ok) { showNoStats(`Stats unavailable: ${await problemText(resp)}`); return; }
    const s = await resp.json();
    if (id !== shownAsset) return;
    if (!s.sessions) { showNoStats(); return; }
    $("stat-sessions").textContent = String(s.sessions);
    $("stat-viewers").textContent = String(s.viewers);
    $("stat-watch").textContent = duration(s.watch_seconds);
    $("stat-p50").textContent = secondsOrDash(s.startup_p50_seconds);
    $("stat-p95").textContent = secondsOrDash(s.startup_p95_seconds);
    $("stat-rebuffer").textContent = ratio(s.rebuffer_ratio);
    $("stat-completion").textContent = ratio(s.completion_rate);
    const per = Object.entries(s.renditions || {}).sort(([a], [b]) => a.localeCompare(b));
    const total = per.reduce((n, [, v]) => n + v, 0);
    $("stat-rendition-rows").replaceChildren(...per.map(([r, v]) => el("tr", {},
      el("th", { scope: "row", text: r }),
      el("td", { text: duration(v) }),
      el("td", { text: total ? ratio(v / total) : "–" }))));
    $("stats-empty").hidden = true;
    $("stats").hidden = false;
    drawStatsChart(per);
  }

  let chartedStats = [];
  function drawStatsChart(per) {
    chartedStats = per;
    const box = $("stats-chart");
    if (statsChart) { statsChart.destroy(); statsChart = null; }
    box.replaceChildren();
    if (!per.length || typeof uPlot === "undefined") return;
    const xs = per.map((_, i) => i);
    statsChart = new uPlot({
      width: Math.min(box.clientWidth || 600, 720), height: 180,
      title: "Seconds watched per rendition",
      scales: { x: { time: false, range: [-0.5, per.length - 0.5] },
                y: { range: (_u, _min, max) => [0, Math.ceil(max * 1.1) || 1] } },
      axes: [{ splits: () => xs, values: (_u, ticks) => ticks.map((t) => per[t]?.[0] ?? "") },
             {}],
      series: [{}, { label: "seconds", stroke: "#16702e", fill: "rgba(22,112,46,.35)",
                     paths: uPlot.paths.bars({ size: [0.5, 60] }) }],
    }, [xs, per.map(([, v]) => Math.round(v * 10) / 10)], box);
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
    const { hls: src, poster } = await resp.json();
    stopPreview();
    video.dataset.source = id;
    // A poster 404s for assets made before storyboards: the player shows nothing then.
    if (poster) video.poster = poster;
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

  function askConfirm(title, text, action) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    onConfirm = action;
    dialog.returnValue = "";
    dialog.showModal();
  }

  function askDelete() {
    askConfirm(`Delete ${shownAsset}?`, "Its media, master and metadata are removed, and "
      + "the edges purged. This cannot be undone.", doDelete);
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

  // -- webhooks ---------------------------------------------------------------------------
  function stopHookRefresh() { clearTimeout(hookTimer); hookTimer = 0; }

  // A new subscription's secret is on screen until the page leaves the webhooks view.
  function forgetSecret() {
    $("hook-secret").hidden = true;
    $("hook-secret-value").textContent = "";
  }

  async function showWebhooks(id) {
    shownAsset = null;
    stopPreview();
    $("list-view").hidden = true;
    $("asset-view").hidden = true;
    $("webhooks-view").hidden = false;
    document.title = "Webhooks · cdlc-stream console";
    shownHook = id;
    stopHookRefresh();
    await loadHooks();
    if (id) {
      $("deliveries-card").hidden = false;
      await loadDeliveries();
      $("deliveries-title").focus();
    } else {
      $("deliveries-card").hidden = true;
    }
  }

  async function loadHooks() {
    const resp = await api("/v1/webhooks");
    if (!resp.ok) { $("hook-error").textContent = await problemText(resp); return; }
    const { items } = await resp.json();
    $("hooks").replaceChildren(...items.map((h) => {
      const del = el("button", { type: "button", class: "danger",
                                 "aria-label": `Delete webhook ${h.url}`, text: "Delete…" });
      del.addEventListener("click", () => askConfirm(`Delete the webhook to ${h.url}?`,
        "No more events are sent to it, and its pending deliveries are dropped.",
        () => deleteHook(h.id)));
      return el("li", { class: "hook", "data-id": h.id },
        el("p", { class: "url", text: h.url }),
        el("p", { class: "help", text: `${h.events.join(", ")} · since ${when(h.created_at)}` }),
        el("div", { class: "actions" },
          el("a", { href: `#/webhooks/${encodeURIComponent(h.id)}`, class: "button",
                    "aria-label": `Delivery log of ${h.url}`, text: "Delivery log" }),
          del));
    }));
    $("hooks-empty").hidden = items.length > 0;
    const shown = items.find((h) => h.id === shownHook);
    $("deliveries-url").textContent = shown ? `To ${shown.url} (${shown.id})` : "";
  }

  async function addHook(form) {
    const url = $("hook-url").value.trim();
    const events = [...form.querySelectorAll("input[name=events]:checked")].map((c) => c.value);
    $("hook-error").textContent = "";
    $("hook-secret").hidden = true;
    if (!events.length) { $("hook-error").textContent = "Choose at least one event."; return; }
    const resp = await api("/v1/webhooks", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url, events }),
    });
    if (resp.status !== 201) {
      $("hook-error").textContent = `Not added: ${await problemText(resp)}`;
      $("hook-url").focus();
      return;
    }
    const hook = await resp.json();
    $("hook-secret-id").textContent = hook.id;
    $("hook-secret-value").textContent = hook.secret;
    $("hook-secret").hidden = false;
    $("hook-url").value = "";
    await loadHooks();
  }

  async function deleteHook(id) {
    const resp = await api(`/v1/webhooks/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (resp.status !== 204 && resp.status !== 404) {
      $("hook-error").textContent = await problemText(resp);
      return;
    }
    if (shownHook === id) { location.hash = "#/webhooks"; return; }
    await loadHooks();
  }

  async function loadDeliveries() {
    stopHookRefresh();
    const id = shownHook;
    if (!id || $("webhooks-view").hidden) return;
    const resp = await api(`/v1/webhooks/${encodeURIComponent(id)}/deliveries`);
    if (id !== shownHook || $("webhooks-view").hidden) return;
    if (resp.status === 404) {
      $("deliveries-error").textContent = "This webhook no longer exists.";
      $("deliveries").replaceChildren();
      return;
    }
    if (!resp.ok) {
      $("deliveries-error").textContent = await problemText(resp);
    } else {
      $("deliveries-error").textContent = "";
      const { items } = await resp.json();
      renderDeliveries(items);
    }
    stopHookRefresh();  // one timer, even when two loads overlapped
    hookTimer = setTimeout(loadDeliveries, HOOK_REFRESH_MS);
  }

  function renderDeliveries(items) {
    const now = Date.now() / 1000;
    $("deliveries-empty").hidden = items.length > 0;
    $("deliveries").replaceChildren(...items.map((d) => {
      const asset = d.payload?.data?.asset?.id;
      const summary = [`${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`];
      if (d.last_status) summary.push(`last answer HTTP ${d.last_status}`);
      else if (d.last_error) summary.push(`last error: ${d.last_error}`);
      const head = el("p", { class: "delivery-head" },
        el("strong", { text: d.event_type }), " ",
        el("span", { class: `state state-${d.state}`, text: d.state }),
        ` ${asset ? `asset ${asset} · ` : ""}${summary.join(" · ")}`);
      const parts = [head];
      if (d.state === "pending" && d.next_attempt) {
        const wait = Math.max(0, Math.round(d.next_attempt - now));
        parts.push(el("p", { class: "next", text: `Next retry in ${wait} s (${when(d.next_attempt)})` }));
      }
      if (d.log.length) {
        parts.push(el("div", { class: "table-wrap" }, el("table", { class: "attempts" },
          el("caption", { class: "visually-hidden", text: `Attempts of ${d.event_type}` }),
          el("thead", {}, el("tr", {},
            el("th", { scope: "col", text: "#" }), el("th", { scope: "col", text: "Sent" }),
            el("th", { scope: "col", text: "Answer" }),
            el("th", { scope: "col", text: "Time" }))),
          el("tbody", {}, ...d.log.map((a) => el("tr", { "data-status": String(a.status ?? "") },
            el("td", { text: String(a.number) }),
            el("td", { text: when(a.at) }),
            el("td", { text: a.status ? `HTTP ${a.status}` : (a.error || "no answer") }),
            el("td", { text: `${Math.round(a.duration_ms)} ms` })))))));
      }
      return el("li", { class: "delivery", "data-id": d.id, "data-event": d.event_type,
                        "data-state": d.state }, ...parts);
    }));
  }

  // -- routing --------------------------------------------------------------------------
  function markNav(which) {
    for (const [id, name] of [["nav-assets", "assets"], ["nav-webhooks", "webhooks"]]) {
      if (name === which) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
  }

  // A hash typed or pasted by hand may hold a stray "%": decodeURIComponent would
  // throw and leave the page half-routed. Kept as typed, the server refuses it as
  // an id, and the page says so.
  function fromHash(part) {
    try { return decodeURIComponent(part); } catch { return part; }
  }

  function route() {
    if (!key()) { signOut(); return; }
    const hook = location.hash.match(/^#\/webhooks(?:\/(.+))?$/);
    if (hook) {
      markNav("webhooks");
      showWebhooks(hook[1] ? fromHash(hook[1]) : null);
      return;
    }
    markNav("assets");
    stopHookRefresh();
    shownHook = null;
    $("webhooks-view").hidden = true;
    forgetSecret();
    const m = location.hash.match(/^#\/assets\/(.+)$/);
    if (m) { showAsset(fromHash(m[1])); return; }
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
      const action = onConfirm;
      onConfirm = null;
      if ($("confirm").returnValue === "delete" && action) action();
    });
    $("stats-refresh").addEventListener("click", () => { if (shownAsset) loadStats(shownAsset); });
    $("hook-form").addEventListener("submit", (ev) => { ev.preventDefault(); addHook(ev.target); });
    $("deliveries-refresh").addEventListener("click", loadDeliveries);
    $("asset-title").setAttribute("tabindex", "-1");
    setupDrop();
    window.addEventListener("hashchange", route);
    let resizing = 0;
    window.addEventListener("resize", () => {  // the chart is drawn to its box's width
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (charted.length) drawChart(charted);
        if (chartedStats.length) drawStatsChart(chartedStats);
      }, 150);
    });
    if (key()) start(); else signOut();
  });
})();
