// Injected before the page's own scripts (Playwright add_init_script) by
// tests/e2e/test_languages_play.py, beside the harness that starts the player:
// the three players' own track APIs behind one shape, window.LANG, and a record
// of every MSE SourceBuffer the player makes (its MIME type and timestampOffset:
// where the player puts each track on the timeline).
'use strict';
(() => {
  const LANG = window.LANG = {
    sourceBuffers: [],  // {mime, sb}
    played: [],         // languages the player reports as now playing, in order
  };

  const addSourceBuffer = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function (mime) {
    const sb = addSourceBuffer.call(this, mime);
    LANG.sourceBuffers.push({mime: mime, sb: sb});
    return sb;
  };
  LANG.offsets = () => LANG.sourceBuffers.map(
    (s) => ({mime: s.mime, offset: s.sb.timestampOffset}));

  function played(lang) {
    if (LANG.played[LANG.played.length - 1] !== lang) LANG.played.push(lang);
  }

  // Each player: audio() and text() list its tracks as {lang, name}; playing()
  // is the language of the audio it plays now, by its own account; watch() hooks
  // its "audio track now playing" event; selectAudio / selectText pick by language.
  const players = {
    hlsjs: {
      audio: () => window.hls.audioTracks.map((t) => ({lang: t.lang, name: t.name})),
      text: () => window.hls.subtitleTracks.map((t) => ({lang: t.lang, name: t.name})),
      playing: () => (window.hls.audioTracks[window.hls.audioTrack] || {}).lang,
      watch: () => window.hls.on(Hls.Events.AUDIO_TRACK_SWITCHED,
        (_, d) => played(window.hls.audioTracks[d.id].lang)),
      selectAudio: (lang) => {
        window.hls.audioTrack = window.hls.audioTracks.findIndex((t) => t.lang === lang);
      },
      selectText: (lang) => {
        window.hls.subtitleDisplay = true;
        window.hls.subtitleTrack = window.hls.subtitleTracks.findIndex((t) => t.lang === lang);
      },
    },
    dashjs: {
      audio: () => window.dashPlayer.getTracksFor('audio').map(
        (t) => ({lang: t.lang, name: (t.labels[0] || {}).text || ''})),
      text: () => window.dashPlayer.getTracksFor('text').map(
        (t) => ({lang: t.lang, name: (t.labels[0] || {}).text || ''})),
      playing: () => (window.dashPlayer.getCurrentTrackFor('audio') || {}).lang,
      watch: () => window.dashPlayer.on(dashjs.MediaPlayer.events.TRACK_CHANGE_RENDERED, (e) => {
        if (e.mediaType === 'audio') played(e.newMediaInfo.lang);
      }),
      selectAudio: (lang) => {
        const p = window.dashPlayer;
        p.setCurrentTrack(p.getTracksFor('audio').find((t) => t.lang === lang));
      },
      selectText: (lang) => {
        const p = window.dashPlayer;
        p.enableText(true);
        p.setTextTrack(p.getTracksFor('text').findIndex((t) => t.lang === lang));
      },
    },
    shaka: {
      audio: () => window.shakaPlayer.getAudioTracks().map(
        (t) => ({lang: t.language, name: t.label || ''})),
      text: () => window.shakaPlayer.getTextTracks().map(
        (t) => ({lang: t.language, name: t.label || ''})),
      playing: () => (window.shakaPlayer.getVariantTracks().find((t) => t.active) || {}).language,
      watch: () => window.shakaPlayer.addEventListener('variantchanged', () => {
        played(players.shaka.playing());
      }),
      selectAudio: (lang) => {
        const p = window.shakaPlayer;
        p.selectAudioTrack(p.getAudioTracks().find((t) => t.language === lang));
      },
      // Selecting a text track also makes it visible (Shaka 5).
      selectText: (lang) => {
        const p = window.shakaPlayer;
        p.selectTextTrack(p.getTextTracks().find((t) => t.language === lang));
      },
    },
  };

  LANG.api = () => players[new URLSearchParams(location.search).get('player')];
  // Every text track of the <video> element, for failure messages.
  LANG.textState = () => [...document.getElementById('video').textTracks].map((t) => ({
    kind: t.kind, label: t.label, lang: t.language, mode: t.mode,
    cues: t.cues ? [...t.cues].map((c) => [c.startTime, c.endTime, c.text]) : null}));
  // The player has fetched cues of the track it shows for `lang`.
  LANG.loaded = (lang) => [...document.getElementById('video').textTracks].some(
    (t) => t.language === lang && t.mode === 'showing' && t.cues && t.cues.length > 0);
  // The cues the <video> element shows now: every text track's active cues.
  LANG.activeCues = () => {
    const out = [];
    const video = document.getElementById('video');
    for (const track of video.textTracks) {
      for (const cue of track.activeCues || []) {
        out.push({text: cue.text, start: cue.startTime, end: cue.endTime,
                  lang: track.language, mode: track.mode});
      }
    }
    return out;
  };
})();
