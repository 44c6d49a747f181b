// The e2e harness: loads one player library (hls.js, dash.js or Shaka Player, from
// node_modules via the test's static route), plays ?src= and records what the
// player and the <video> element report, for tests/e2e/test_players.py to read
// through window.E2E. The video element is the neutral judge: videoHeight tells
// which rendition is on screen, whatever the player claims.
'use strict';

const params = new URLSearchParams(location.search);
const E2E = window.E2E = {
  player: params.get('player'),
  src: params.get('src'),
  ready: false,        // manifest parsed, video heights known
  heights: [],         // video rendition heights the player offers
  errors: [],          // every error event: {fatal, text}
  rendered: [],        // distinct videoHeight values in the order seen
  switches: [],        // the player's own "now rendering height H" events
  force: null,         // force(height): pin the rendition of that height
  log: [],
};
const video = document.getElementById('video');
const status = document.getElementById('status');

function note(text) {
  E2E.log.push(((performance.now() / 1000).toFixed(2)) + ' ' + text);
}
function fail(fatal, text) {
  E2E.errors.push({fatal: fatal, text: String(text).slice(0, 500)});
  note((fatal ? 'FATAL ' : 'error ') + text);
}
video.addEventListener('resize', () => {
  const h = video.videoHeight;
  if (h && E2E.rendered[E2E.rendered.length - 1] !== h) {
    E2E.rendered.push(h);
    note('rendered ' + h);
  }
});
video.addEventListener('error', () => {
  const e = video.error;
  fail(true, 'media element error ' + (e ? e.code + ' ' + e.message : '?'));
});
setInterval(() => {
  status.textContent = E2E.player + '  t=' + video.currentTime.toFixed(2) +
    '  ' + video.videoWidth + 'x' + video.videoHeight +
    '  rendered=' + E2E.rendered.join(',') + '  errors=' + E2E.errors.length;
}, 200);

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error('cannot load ' + src));
    document.head.appendChild(s);
  });
}

const players = {
  async hlsjs() {
    await loadScript('/lib/hls.min.js');
    // ?start=CODEC: the codec family hls.js is to pick (its videoPreference). It
    // keeps the family it starts on: a level of another family appended to the
    // first one's SourceBuffer fails (bufferAppendError).
    const start = params.get('start');
    const hls = new Hls({enableWorker: true, capLevelToPlayerSize: false,
                         ...(start ? {videoPreference: {videoCodec: start}} : {})});
    hls.on(Hls.Events.ERROR, (_, d) => fail(d.fatal, 'hls.js ' + d.type + ' ' + d.details +
      (d.frag ? ' (level ' + d.frag.level + ' fragment ' + d.frag.sn + ')' : '') +
      (d.error ? ': ' + d.error.message : '')));
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => {
      E2E.switches.push(hls.levels[d.level].height);
      note('hls.js level ' + d.level);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      E2E.heights = hls.levels.map((l) => l.height);
      E2E.ready = true;
    });
    // currentLevel: switch now, flushing what is buffered of the other level.
    E2E.force = (height) => { hls.currentLevel = hls.levels.findIndex((l) => l.height === height); };
    hls.loadSource(E2E.src);
    hls.attachMedia(video);
    window.hls = hls;
  },

  async dashjs() {
    await loadScript('/lib/dash.all.min.js');
    const player = dashjs.MediaPlayer().create();
    const ev = dashjs.MediaPlayer.events;
    player.on(ev.ERROR, (e) => {
      const err = e.error || {};
      fail(true, 'dash.js ' + (err.code || '') + ' ' + (err.message || JSON.stringify(e)));
    });
    player.on(ev.PLAYBACK_ERROR, (e) => fail(true, 'dash.js playback ' + JSON.stringify(e)));
    player.on(ev.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType === 'video') {
        E2E.switches.push(e.newRepresentation.height);
        note('dash.js representation ' + e.newRepresentation.id);
      }
    });
    player.on(ev.STREAM_INITIALIZED, () => {
      E2E.heights = player.getRepresentationsByType('video').map((r) => r.height);
      E2E.ready = true;
    });
    E2E.force = (height) => {
      player.updateSettings({streaming: {abr: {autoSwitchBitrate: {video: false}}}});
      const reps = player.getRepresentationsByType('video');
      player.setRepresentationForTypeByIndex(
        'video', reps.findIndex((r) => r.height === height), true);
    };
    player.initialize(video, E2E.src, true);
    window.dashPlayer = player;
  },

  async shaka() {
    await loadScript('/lib/shaka-player.compiled.js');
    shaka.polyfill.installAll();
    const player = new shaka.Player();
    await player.attach(video);
    player.addEventListener('error', (e) => {
      const d = e.detail || {};
      fail(d.severity === 2, 'shaka ' + d.code + ' ' + JSON.stringify(d.data || []).slice(0, 300));
    });
    player.addEventListener('adaptation', (e) => {
      const t = e.newTrack;
      if (t && t.height) {
        E2E.switches.push(t.height);
        note('shaka variant ' + t.id);
      }
    });
    E2E.force = (height) => {
      player.configure({abr: {enabled: false}});
      const track = player.getVariantTracks().find((t) => t.height === height);
      player.selectVariantTrack(track, /* clearBuffer */ true);
    };
    await player.load(E2E.src);
    E2E.heights = [...new Set(player.getVariantTracks().map((t) => t.height))];
    E2E.ready = true;
    video.play().catch((e) => fail(true, 'play() ' + e));
    window.shakaPlayer = player;
  },
};

window.addEventListener('error', (e) => fail(true, 'page error ' + e.message));
window.addEventListener('unhandledrejection', (e) => fail(true, 'unhandled ' + e.reason));
(async () => {
  const start = players[E2E.player];
  if (!start) {
    fail(true, 'unknown player ' + E2E.player);
    return;
  }
  try {
    await start();
    note('started ' + E2E.player);
    video.play().catch(() => {});  // hls.js: after attachMedia; others start themselves
  } catch (e) {
    fail(true, 'start: ' + (e && e.stack || e));
  }
})();
