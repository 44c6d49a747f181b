/*
 * cdlc-beacon.js: watch events from a web player to the cdlc-stream origin
 * (POST /v1/events?token=..., docs/analytics.md). No dependencies.
 *
 *   var beacon = CdlcBeacon.attach(player, {
 *     endpoint: 'https://origin.example/v1/events',  // default: this script's origin
 *     token: playbackToken, assetId: 'a1',
 *   });
 *
 * ``player`` is an hls.js instance (attached to its <video>), a dash.js
 * MediaPlayer or a Shaka Player; each is followed through its own event API
 * (hls.js LEVEL_SWITCHED / ERROR, dash.js QUALITY_CHANGE_RENDERED / ERROR, Shaka
 * adaptation / variantchanged / error / buffering) and the <video> element it
 * plays into (first frame, stalls, seeks, end). A new session id per attach.
 *
 * Events: start, first_frame, heartbeat (every ``heartbeatSeconds``, default 5,
 * with position and rendition), stall_start / stall_end, seek (a heartbeat at
 * the old position goes first, so the server counts what was watched before
 * the jump), rendition_change, error, end. They are batched (``batchSize``,
 * default 20, or every ``flushSeconds``, default 2) and sent as text/plain
 * (no CORS preflight); on pagehide what is left goes by navigator.sendBeacon.
 * Every event has its own id, so a batch sent twice (a retry) counts once.
 *
 * While the origin cannot take events (a 5xx, a 429, no network) they stay
 * queued and go with a later flush, at most ``maxBatch`` (default 100) per
 * request, under the origin's 500 events and sendBeacon's 64 KiB; past
 * ``maxQueued`` (default 2000, hours of heartbeats) the oldest are dropped
 * (counted in ``dropped``), so a long outage costs a bounded amount of memory.
 */
(function (global) {
  'use strict';

  var scriptOrigin = (function () {
    try {
      var s = document.currentScript;
      return s && s.src ? new URL(s.src).origin : location.origin;
    } catch (e) {
      return '';
    }
  })();

  function uuid() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    var b = new Uint8Array(16);
    global.crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) {
      return (x + 256).toString(16).slice(1);
    }).join('');
  }

  // Our rendition ids: the path segment after /vod/{asset}/ (v360, audio...),
  // else "v" + the picture's short side (what engine/ladder.py names them).
  function renditionFromUrl(url) {
    var m = /\/vod\/[^/]+\/([^/?]+)\//.exec(url || '');
    return m ? m[1] : '';
  }
  function renditionFromSize(width, height) {
    if (!width && !height) return '';
    return 'v' + Math.min(width || height, height || width);
  }

  function Beacon(player, opts) {
    opts = opts || {};
    this.player = player;
    this.endpoint = opts.endpoint || (scriptOrigin + '/v1/events');
    this.token = opts.token || '';
    this.assetId = opts.assetId || '';
    this.viewerId = opts.viewerId || '';
    this.heartbeatMs = (opts.heartbeatSeconds || 5) * 1000;
    this.batchSize = opts.batchSize || 20;
    this.flushMs = (opts.flushSeconds || 2) * 1000;
    this.maxBatch = opts.maxBatch || 100;
    this.maxQueued = opts.maxQueued || 2000;
    this.dropped = 0;       // events dropped past maxQueued during an outage
    this._sending = null;   // the request in flight (one at a time)
    this.sessionId = uuid();
    this.seq = 0;
    this.queue = [];
    this.rendition = '';
    this.bitrate = 0;
    this.lastPosition = 0;
    this.firstFrame = false;
    this.stalled = false;
    this.ended = false;
    this.lastBeat = 0;
    this.sent = 0;          // events handed to the network (for tests and debugging)
    this.kind = '';
    this.video = null;
    this._timers = [];
    this._off = [];
    this._attach();
  }

  Beacon.prototype.url = function () {
    var q = 'token=' + encodeURIComponent(this.token);
    if (this.assetId) q += '&asset=' + encodeURIComponent(this.assetId);
    return this.endpoint + (this.endpoint.indexOf('?') < 0 ? '?' : '&') + q;
  };

  Beacon.prototype.position = function () {
    var v = this.video;
    return v && isFinite(v.currentTime) ? v.currentTime : 0;
  };

  Beacon.prototype.emit = function (type, extra) {
    var e = {
      event_id: this.sessionId + '-' + (this.seq++),
      session_id: this.sessionId,
      asset_id: this.assetId,
      viewer_id: this.viewerId,
      type: type,
      time: new Date().toISOString(),
      position_seconds: Math.max(0, (extra && extra.position !== undefined)
        ? extra.position : this.position()),
      rendition_id: this.rendition,
      bitrate: Math.round(this.bitrate || 0),
      error: (extra && extra.error) ? String(extra.error).slice(0, 500) : '',
    };
    if (type === 'heartbeat') this.lastBeat = Date.now();
    this.queue.push(e);
    this._trim();
    if (this.queue.length >= this.batchSize || type === 'end' || type === 'error') this.flush();
  };

  // Send what is queued, maxBatch events a request: fetch (keepalive) normally,
  // sendBeacon when the page goes. One flush at a time: a batch out for sending is
  // not in the queue, and a failed one goes back to its front.
  Beacon.prototype.flush = function (leaving) {
    if (leaving) {
      while (this.queue.length && navigator.sendBeacon) {
        var last = this.queue.slice(0, this.maxBatch);
        if (!navigator.sendBeacon(this.url(), new Blob([JSON.stringify(last)],
                                                       {type: 'text/plain'}))) break;
        this.queue.splice(0, last.length);
        this.sent += last.length;
      }
    }
    var self = this;
    // After the request in flight, if it went through, whatever is queued then.
    if (this._sending) {
      return this._sending.then(function (ok) { return ok ? self.flush() : false; });
    }
    if (!this.queue.length) return Promise.resolve(true);
    var batch = this.queue.splice(0, this.maxBatch);
    var body = JSON.stringify(batch);
    this.sent += batch.length;
    // Bounded: one request at a time, so a request the network swallowed must
    // not hold every later event.
    var signal = global.AbortSignal && AbortSignal.timeout ? AbortSignal.timeout(15000)
      : undefined;
    var sent = fetch(this.url(), {method: 'POST', body: body,
                                  keepalive: body.length < 60000, signal: signal,
                                  headers: {'Content-Type': 'text/plain'}, mode: 'cors'})
      .then(function (r) {
        if (r.status >= 500 || r.status === 429) throw new Error('status ' + r.status);
        return true;
      })
      .catch(function () {
        // Kept for the next flush; the ids make a resend harmless.
        self.sent -= batch.length;
        self.queue = batch.concat(self.queue);
        self._trim();
        return false;
      });
    this._sending = sent.then(function (ok) {
      self._sending = null;
      // More was waiting (past maxBatch, or queued meanwhile): it goes now.
      return ok && self.queue.length ? self.flush() : ok;
    });
    return this._sending;
  };

  // Past maxQueued the oldest events go: a long outage costs bounded memory.
  Beacon.prototype._trim = function () {
    var over = this.queue.length - this.maxQueued;
    if (over > 0) {
      this.dropped += over;
      this.queue.splice(0, over);
    }
  };

  Beacon.prototype.setRendition = function (id, bitrate) {
    if (!id || id === this.rendition) {
      if (bitrate) this.bitrate = bitrate;
      return;
    }
    var first = !this.rendition;
    this.rendition = id;
    if (bitrate) this.bitrate = bitrate;
    if (!first) this.emit('rendition_change');
  };

  Beacon.prototype._on = function (target, name, fn, remove) {
    var self = this;
    var bound = function (a, b) { fn.call(self, a, b); };
    target[remove ? 'on' : 'addEventListener'](name, bound);
    this._off.push(function () {
      target[remove || 'removeEventListener'](name, bound);
    });
  };

  Beacon.prototype._attach = function () {
    var p = this.player;
    if (global.Hls && p instanceof global.Hls) {
      this.kind = 'hlsjs';
      this.video = p.media;
      this._on(p, global.Hls.Events.LEVEL_SWITCHED, function (_, d) {
        var l = p.levels[d.level] || {};
        this.setRendition(renditionFromUrl(l.url && (l.url[0] || l.url)) ||
                          renditionFromSize(l.width, l.height), l.bitrate);
      }, 'off');
      this._on(p, global.Hls.Events.ERROR, function (_, d) {
        if (d && d.fatal) this.emit('error', {error: 'hls.js ' + d.type + ' ' + d.details});
      }, 'off');
    } else if (typeof p.getVideoElement === 'function' && typeof p.on === 'function') {
      this.kind = 'dashjs';
      this.video = p.getVideoElement();
      var ev = global.dashjs.MediaPlayer.events;
      this._on(p, ev.QUALITY_CHANGE_RENDERED, function (e) {
        if (e.mediaType !== 'video') return;
        var r = e.newRepresentation || {};
        this.setRendition(/^v[0-9]/.test(r.id || '') ? r.id : renditionFromSize(r.width, r.height),
                          r.bandwidth);
      }, 'off');
      this._on(p, ev.ERROR, function (e) {
        var err = (e && e.error) || {};
        this.emit('error', {error: 'dash.js ' + (err.code || '') + ' ' + (err.message || '')});
      }, 'off');
    } else if (typeof p.getVariantTracks === 'function') {
      this.kind = 'shaka';
      this.video = p.getMediaElement();
      var track = function () {
        var t = p.getVariantTracks().filter(function (x) { return x.active; })[0];
        if (!t) return;
        var id = /^v[0-9]/.test(t.originalVideoId || '') ? t.originalVideoId
          : renditionFromSize(t.width, t.height);
        this.setRendition(id, t.videoBandwidth || t.bandwidth);
      };
      this._on(p, 'adaptation', track);
      this._on(p, 'variantchanged', track);
      this._on(p, 'trackschanged', track);
      this._on(p, 'error', function (e) {
        var d = (e && e.detail) || {};
        if (d.severity === 2) this.emit('error', {error: 'shaka ' + d.code});
      });
      track.call(this);
    } else {
      throw new Error('CdlcBeacon: not an hls.js, dash.js or Shaka player');
    }
    var v = this.video;
    if (!v) throw new Error('CdlcBeacon: the player has no media element yet');

    this.emit('start');
    var playing = function () {
      if (!this.firstFrame) {
        this.firstFrame = true;
        this.rendition = this.rendition || renditionFromSize(v.videoWidth, v.videoHeight);
        this.emit('first_frame');
        this.lastBeat = Date.now();
      }
      if (this.stalled) {
        this.stalled = false;
        this.emit('stall_end');
      }
    };
    this._on(v, 'playing', playing);
    this._on(v, 'timeupdate', function () {
      if (!v.seeking) this.lastPosition = v.currentTime;
      if (!this.firstFrame && v.currentTime > 0 && !v.paused) playing.call(this);
    });
    this._on(v, 'waiting', function () {
      // A seek's own buffering is not a stall; nor is waiting before the first frame.
      if (this.firstFrame && !v.seeking && !v.ended && !this.stalled) {
        this.stalled = true;
        this.emit('stall_start');
      }
    });
    this._on(v, 'seeking', function () {
      this.emit('heartbeat', {position: this.lastPosition});
      if (this.stalled) {
        this.stalled = false;
        this.emit('stall_end', {position: this.lastPosition});
      }
      this.emit('seek');
      // A seek started before the last one ended leaves from this one's target.
      this.lastPosition = v.currentTime;
    });
    this._on(v, 'seeked', function () { this.lastPosition = v.currentTime; });
    this._on(v, 'ended', function () {
      if (!this.ended) {
        this.ended = true;
        this.emit('end');
      }
    });
    this._on(v, 'pause', function () { if (!v.ended) this.emit('heartbeat'); });
    if (v.currentTime > 0 && !v.paused && v.readyState >= 3) playing.call(this);

    var self = this;
    this._timers.push(setInterval(function () {
      if (self.firstFrame && !v.paused && Date.now() - self.lastBeat >= self.heartbeatMs) {
        self.emit('heartbeat');
      }
    }, 250));
    this._timers.push(setInterval(function () { self.flush(); }, this.flushMs));
    this._onHide = function () {
      self.emit('heartbeat');
      self.flush(true);
    };
    global.addEventListener('pagehide', this._onHide);
  };

  // Stop following the player: a last heartbeat, then everything is sent.
  Beacon.prototype.stop = function () {
    this._timers.forEach(clearInterval);
    this._off.forEach(function (f) { f(); });
    global.removeEventListener('pagehide', this._onHide);
    this.emit('heartbeat');
    return this.flush();
  };

  global.CdlcBeacon = {
    attach: function (player, opts) { return new Beacon(player, opts); },
    Beacon: Beacon,
  };
})(typeof window !== 'undefined' ? window : this);
