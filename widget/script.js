/*
 * Kommo feel-connected bridge: the Kommo UI widget (the manager's side of presence and read).
 *
 * While a manager has a chat conversation open in Kommo, this widget
 *   - reports the manager viewing it: POST {bridge_url}/kommo/ui/conversations/{id}/presence
 *     {"state":"viewing"} at once and then every 15 s, paused while the tab is hidden;
 *   - reports leaving it ({"state":"left"}) when the conversation closes or another one opens,
 *     and when the page goes away (pagehide: a keepalive fetch, see leaveOnUnload);
 *   - reports it read: POST …/read once per opening, and again when a new client message
 *     appears while the tab is visible;
 *   - shows the client's presence (GET …/presence) as an online mark with "last seen …"
 *     beside the client's name, refreshed at most every 15 s.
 *
 * Every call goes through Kommo's this.$authorizedAjax, which adds the one-time X-Auth-Token;
 * the widget holds no secret. A failing bridge (unreachable, 4xx, 5xx) never disturbs Kommo:
 * no dialog, nothing thrown into the page (every entry point is guarded), retries with backoff.
 *
 * Seams (see widget/README.md):
 *   self.currentConversation()   the ONE place that reads Kommo's page: the open chat's id,
 *                                the client's name element, the newest client message's id.
 *   self.onConversationChanged() the host may call it when a chat opens, switches or closes
 *                                (the widget also re-reads the page every watchMs by itself).
 *   self.onClientMessage()       the host may call it when a new client message appears.
 *   self.configureTimings({...}) shorter intervals for tests; defaults in DEFAULT_TIMINGS.
 */
define(['jquery'], function ($) {
  'use strict';

  var DEFAULT_TIMINGS = {
    heartbeatMs: 15000, // "viewing" cadence while the conversation is open and the tab visible
    presenceMs: 15000, // the client's presence is fetched at most this often
    watchMs: 1000, // how often Kommo's page is re-read for the open conversation
    backoffBaseMs: 2000, // first retry after a failure; doubles per failure, with jitter
    backoffMaxMs: 120000, // the longest wait between retries
    readAttempts: 5, // tries of one POST …/read
    leftAttempts: 3, // tries of one {"state":"left"}
    requestTimeoutMs: 10000, // a call taking longer counts as failed
    staleAfterMs: 60000 // a presence mark older than this (the bridge failing) is hidden
  };

  // What the widget assumes of Kommo's DOM: ASSUMPTIONS, not checked against a live Kommo
  // account (the test harness renders exactly this). Only currentConversation() uses them;
  // adapt them here, set widget.kommoDom, or replace currentConversation. See widget/README.md.
  var KOMMO_DOM = {
    chat: '[data-chat-id]', // the open chat's container, carrying Kommo's chat id
    chatIdAttribute: 'data-chat-id',
    clientName: '.feed-compose-user__name', // the client's name in the open chat
    clientMessage: '.feed-note-incoming[data-id]', // a client's (incoming) message
    messageIdAttribute: 'data-id'
  };

  var MARK_CLASS = 'kfc-presence';
  var STYLE_ID = 'kfc-presence-style';

  var FALLBACK_TEXT = {
    online: 'online',
    typing: 'typing…',
    last_seen: 'last seen {when}',
    just_now: 'just now',
    minutes_ago: '{n} min ago',
    today_at: 'today at {time}',
    unknown: ''
  };

  function now() {
    return Date.now();
  }

  function noop() {}

  var CustomWidget = function () {
    var self = this;
    var timings = $.extend({}, DEFAULT_TIMINGS);
    var started = false;
    var listening = false;
    var watchTimer = null;
    var open = null; // the open conversation: see openConversation()
    var token = null; // the newest X-Auth-Token seen, for the unload call: {value, exp}
    var diagnostics = [];

    // ------------------------------------------------------------------ guards and helpers

    function note(what, detail) {
      diagnostics.push({ at: now(), what: what, detail: detail === undefined ? null : String(detail) });
      if (diagnostics.length > 50) {
        diagnostics.shift();
      }
    }

    // Runs fn, swallowing anything it throws: nothing the widget does may break Kommo's page.
    function guard(fn) {
      return function () {
        try {
          return fn.apply(this, arguments);
        } catch (error) {
          note('error', error && error.message ? error.message : error);
          return undefined;
        }
      };
    }

    function later(fn, delayMs) {
      return window.setTimeout(guard(fn), Math.max(0, delayMs));
    }

    function backoff(failures) {
      var base = Math.min(timings.backoffMaxMs, timings.backoffBaseMs * Math.pow(2, Math.max(0, failures - 1)));
      return Math.round(base * (0.8 + Math.random() * 0.4));
    }

    function settings() {
      var value = null;
      try {
        value = typeof self.get_settings === 'function' ? self.get_settings() : null;
      } catch (error) {
        note('get_settings', error);
      }
      return value || self.params || {};
    }

    // The bridge's base URL from the widget's settings, or null when it is not usable.
    function bridgeBase() {
      var raw = settings().bridge_url;
      if (typeof raw !== 'string') {
        return null;
      }
      var base = raw.trim().replace(/\/+$/, '');
      return /^https?:\/\/[^\s/]+/i.test(base) ? base : null;
    }

    function routeUrl(conversationId, route) {
      var base = bridgeBase();
      return base && base + '/kommo/ui/conversations/' + encodeURIComponent(conversationId) + '/' + route;
    }

    function text(key, values) {
      var phrases = null;
      try {
        phrases = typeof self.i18n === 'function' ? self.i18n('presence') : null;
      } catch (error) {
        phrases = null;
      }
      var template = (phrases && typeof phrases[key] === 'string' && phrases[key]) || FALLBACK_TEXT[key] || '';
      return template.replace(/\{(\w+)\}/g, function (all, name) {
        return values && values[name] !== undefined ? String(values[name]) : all;
      });
    }

    // ------------------------------------------------------------------ calls to the bridge

    // The X-Auth-Token that Kommo's $authorizedAjax puts on a request, captured from the XHR
    // so that the unload call (a keepalive fetch, which $authorizedAjax cannot make) can use
    // a fresh one. The bridge checks a token's signature, exp and nbf, not single use.
    function rememberToken(value) {
      var exp = null;
      try {
        var payload = String(value).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
        exp = Number(JSON.parse(window.atob(payload + '==='.slice((payload.length + 3) % 4))).exp) || null;
      } catch (error) {
        exp = null;
      }
      token = { value: String(value), exp: exp, at: now() };
    }

    function usableToken() {
      if (!token) {
        return null;
      }
      var fresh = token.exp ? token.exp * 1000 - 5000 > now() : now() - token.at < 60000;
      return fresh ? token.value : null;
    }

    function capturingXhr() {
      var xhr = new window.XMLHttpRequest();
      var setRequestHeader = xhr.setRequestHeader;
      xhr.setRequestHeader = function (name, value) {
        if (String(name).toLowerCase() === 'x-auth-token') {
          guard(rememberToken)(value);
        }
        return setRequestHeader.apply(xhr, arguments);
      };
      return xhr;
    }

    // One call through $authorizedAjax. Always a Promise that settles: resolved with the
    // answer's JSON, rejected with a short reason. Never throws.
    function call(method, conversationId, route, body) {
      return new Promise(function (resolvePromise, rejectPromise) {
        // A watchdog, should $authorizedAjax never settle (its token fetch hanging, say).
        var watchdog = window.setTimeout(function () {
          reject('no answer');
        }, timings.requestTimeoutMs + 5000);
        function resolve(answer) {
          window.clearTimeout(watchdog);
          resolvePromise(answer);
        }
        function reject(reason) {
          window.clearTimeout(watchdog);
          rejectPromise(reason);
        }
        var url = routeUrl(conversationId, route);
        if (!url || typeof self.$authorizedAjax !== 'function') {
          reject(url ? 'no $authorizedAjax' : 'no bridge_url');
          return;
        }
        var options = {
          url: url,
          type: method,
          timeout: timings.requestTimeoutMs,
          cache: false,
          global: false, // Kommo's global ajax error handlers never see the bridge's failures
          xhr: capturingXhr
        };
        if (body !== undefined) {
          options.data = JSON.stringify(body);
          options.contentType = 'application/json';
        }
        try {
          var request = self.$authorizedAjax(options);
          if (!request || typeof request.done !== 'function') {
            reject('no deferred');
            return;
          }
          request.done(guard(function (answer) {
            resolve(answer);
          }));
          request.fail(guard(function (xhr, status) {
            var reason = method + ' ' + route + ' failed: ' + ((xhr && xhr.status) || status || 'error');
            note('call', reason);
            reject(reason);
          }));
        } catch (error) {
          note('call', error && error.message ? error.message : error);
          reject('threw');
        }
      });
    }

    // ------------------------------------------------------------------ periodic calls

    // A call repeated every interval() while active (counted from the start of the previous
    // one), paused while the tab is hidden, retried with backoff (never sooner than
    // minRetry()) after a failure.
    function makeLoop(run, interval, minRetry) {
      var loop = { active: false, timer: null, inFlight: false, failures: 0, lastRun: 0 };
      function schedule(delayMs) {
        if (loop.timer) {
          window.clearTimeout(loop.timer);
        }
        loop.timer = later(fire, delayMs);
      }
      function settle(ok) {
        loop.inFlight = false;
        loop.failures = ok ? 0 : loop.failures + 1;
        if (loop.active) {
          // Success: the next call one interval after this one started (a slow answer does
          // not stretch the cadence). Failure: back off from now.
          schedule(ok ? loop.lastRun + interval() - now() : Math.max(minRetry(), backoff(loop.failures)));
        }
      }
      function fire() {
        loop.timer = null;
        if (!loop.active || loop.inFlight || document.hidden) {
          return; // hidden: resume() starts it again on visibilitychange
        }
        loop.inFlight = true;
        loop.lastRun = now();
        run().then(function () {
          settle(true);
        }, function () {
          settle(false);
        }).then(null, noop);
      }
      loop.start = function () {
        loop.active = true;
        loop.failures = 0;
        schedule(0);
      };
      loop.stop = function () {
        loop.active = false;
        if (loop.timer) {
          window.clearTimeout(loop.timer);
        }
        loop.timer = null;
      };
      // Back from hidden: the next call when the interval since the last one is up.
      loop.resume = function () {
        if (loop.active && !loop.inFlight && !loop.timer) {
          schedule(loop.lastRun + interval() - now());
        }
      };
      return loop;
    }

    // ------------------------------------------------------------------ the open conversation

    function openConversation(found) {
      var conversation = {
        id: found.id,
        nameElement: found.nameElement || null,
        lastClientMessage: found.lastClientMessage || null,
        mark: null,
        presence: null, // the last answer: {online, last_seen_at, typing, at}
        readInFlight: false,
        readAgain: false,
        readPending: false,
        closed: false
      };
      conversation.heartbeat = makeLoop(function () {
        return call('POST', conversation.id, 'presence', { state: 'viewing' });
      }, function () {
        return timings.heartbeatMs;
      }, function () {
        return 0;
      });
      conversation.presenceLoop = makeLoop(function () {
        return call('GET', conversation.id, 'presence').then(function (answer) {
          if (!conversation.closed) {
            conversation.presence = $.extend({ at: now() }, (answer && answer.client) || {});
            renderMark(conversation);
          }
        }, function (reason) {
          if (!conversation.closed) {
            renderMark(conversation); // hides a mark grown stale
          }
          throw reason;
        });
      }, function () {
        return timings.presenceMs;
      }, function () {
        return timings.presenceMs; // "at most every presenceMs", failures included
      });
      open = conversation;
      conversation.heartbeat.start();
      conversation.presenceLoop.start();
      requestRead(conversation);
    }

    function closeConversation(how) {
      var conversation = open;
      if (!conversation) {
        return;
      }
      open = null;
      conversation.closed = true;
      conversation.heartbeat.stop();
      conversation.presenceLoop.stop();
      removeMark(conversation);
      if (how === 'unload') {
        leaveOnUnload(conversation.id);
      } else {
        sendLeft(conversation.id, 1);
      }
    }

    function sendLeft(conversationId, attempt) {
      call('POST', conversationId, 'presence', { state: 'left' }).then(null, function () {
        if (attempt < timings.leftAttempts) {
          later(function () {
            sendLeft(conversationId, attempt + 1);
          }, backoff(attempt));
        }
      });
    }

    // The page is going away: $authorizedAjax's asynchronous XHR would be cancelled, and
    // navigator.sendBeacon cannot carry the X-Auth-Token header the bridge requires, so this
    // is a keepalive fetch with the newest token $authorizedAjax produced (at most one
    // heartbeat old, checked against its exp). Without a usable token, a best-effort
    // $authorizedAjax call; if that is lost too, the bridge's window lapses by itself.
    function leaveOnUnload(conversationId) {
      var url = routeUrl(conversationId, 'presence');
      var value = usableToken();
      if (url && value && typeof window.fetch === 'function') {
        window.fetch(url, {
          method: 'POST',
          keepalive: true,
          mode: 'cors',
          headers: { 'Content-Type': 'application/json', 'X-Auth-Token': value },
          body: JSON.stringify({ state: 'left' })
        }).then(noop, noop);
      } else {
        call('POST', conversationId, 'presence', { state: 'left' }).then(null, noop);
      }
    }

    // One POST …/read now (coalesced with one in flight), or when the tab is visible again.
    function requestRead(conversation) {
      if (conversation.closed) {
        return;
      }
      if (document.hidden) {
        conversation.readPending = true;
        return;
      }
      conversation.readPending = false;
      if (conversation.readInFlight) {
        conversation.readAgain = true;
        return;
      }
      conversation.readInFlight = true;
      var attempt = 1;
      function send() {
        if (conversation.closed) {
          finish();
          return;
        }
        call('POST', conversation.id, 'read').then(function () {
          finish();
        }, function () {
          if (!conversation.closed && attempt < timings.readAttempts) {
            later(send, backoff(attempt));
            attempt += 1;
          } else {
            finish();
          }
        });
      }
      function finish() {
        conversation.readInFlight = false;
        if (conversation.readAgain && !conversation.closed) {
          conversation.readAgain = false;
          requestRead(conversation);
        }
      }
      send();
    }

    // ------------------------------------------------------------------ the online mark

    function removeMark(conversation) {
      if (conversation.mark && conversation.mark.parentNode) {
        conversation.mark.parentNode.removeChild(conversation.mark);
      }
      conversation.mark = null;
    }

    function lastSeenText(lastSeenAtS) {
      var ageS = Math.max(0, Math.round(now() / 1000 - lastSeenAtS));
      if (ageS < 60) {
        return text('last_seen', { when: text('just_now') });
      }
      if (ageS < 3600) {
        return text('last_seen', { when: text('minutes_ago', { n: Math.floor(ageS / 60) }) });
      }
      var seen = new Date(lastSeenAtS * 1000);
      var time = seen.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      if (seen.toDateString() === new Date(now()).toDateString()) {
        return text('last_seen', { when: text('today_at', { time: time }) });
      }
      return text('last_seen', { when: seen.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + time });
    }

    function renderMark(conversation) {
      var presence = conversation.presence;
      var anchor = conversation.nameElement;
      var stale = !presence || now() - presence.at > timings.staleAfterMs;
      var known = presence && (presence.online || typeof presence.last_seen_at === 'number');
      if (!anchor || !anchor.parentNode || stale || !known) {
        removeMark(conversation);
        return;
      }
      var mark = conversation.mark;
      if (!mark) {
        mark = document.createElement('span');
        mark.appendChild(document.createElement('span')).className = MARK_CLASS + '__dot';
        mark.appendChild(document.createElement('span')).className = MARK_CLASS + '__text';
        conversation.mark = mark;
      }
      var state = presence.online ? 'online' : 'offline';
      var label = presence.online ? text(presence.typing ? 'typing' : 'online') : lastSeenText(presence.last_seen_at);
      var className = MARK_CLASS + ' ' + MARK_CLASS + '--' + state + (presence.online && presence.typing ? ' ' + MARK_CLASS + '--typing' : '');
      if (mark.className !== className || mark.lastChild.textContent !== label) {
        mark.className = className;
        mark.setAttribute('data-state', state);
        mark.setAttribute('title', label);
        mark.lastChild.textContent = label;
      }
      if (anchor.nextSibling !== mark) {
        anchor.parentNode.insertBefore(mark, anchor.nextSibling);
      }
    }

    function ensureStylesheet() {
      var s = settings();
      var path = (self.params && self.params.path) || s.path;
      if (!path || document.getElementById(STYLE_ID)) {
        return;
      }
      var link = document.createElement('link');
      link.id = STYLE_ID;
      link.rel = 'stylesheet';
      link.type = 'text/css';
      link.href = path + '/style.css?v=' + encodeURIComponent(s.version || (self.params && self.params.version) || '1');
      document.head.appendChild(link);
    }

    // ------------------------------------------------------------------ reading Kommo's page

    function isShown(element) {
      return !!(element && element.getClientRects && element.getClientRects().length);
    }

    /**
     * The seam: which chat conversation the manager has open now, read from Kommo's page.
     * Returns {id, nameElement, lastClientMessage} or null when no chat is open. `id` is
     * Kommo's chat id (the bridge maps it to its conversation), `nameElement` the element
     * showing the client's name (the mark goes right after it), `lastClientMessage` the id
     * of the newest client message shown (a change means a new one arrived).
     * All of Kommo's DOM details live here and in KOMMO_DOM; replace this function to adapt.
     */
    self.currentConversation = function () {
      var dom = self.kommoDom || KOMMO_DOM;
      var chats = document.querySelectorAll(dom.chat);
      // The open chat is the shown element with a chat id that also shows the client's name
      // (so that a list of chats, should it carry ids too, is not taken for the open one).
      for (var i = 0; i < chats.length; i += 1) {
        var root = chats[i];
        var nameElement = root.querySelector(dom.clientName);
        if (isShown(root) && root.getAttribute(dom.chatIdAttribute) && nameElement) {
          var messages = root.querySelectorAll(dom.clientMessage);
          var last = messages.length ? messages[messages.length - 1] : null;
          return {
            id: root.getAttribute(dom.chatIdAttribute),
            nameElement: nameElement,
            lastClientMessage: last ? last.getAttribute(dom.messageIdAttribute) : null
          };
        }
      }
      return null;
    };

    function readPage() {
      var found = null;
      try {
        found = self.currentConversation();
      } catch (error) {
        note('currentConversation', error && error.message ? error.message : error);
        return undefined; // unreadable: change nothing
      }
      return found && found.id ? found : null;
    }

    // Compares the page with what the widget tracks; opens, switches, closes as needed.
    // Returns true when it requested a read for a new client message.
    function sync() {
      if (!started) {
        return false;
      }
      var found = readPage();
      if (found === undefined) {
        return false;
      }
      var id = found ? String(found.id) : null;
      if (open && open.id === id) {
        if (found.nameElement !== open.nameElement) {
          open.nameElement = found.nameElement || null;
          removeMark(open);
        }
        renderMark(open);
        var newest = found.lastClientMessage || null;
        if (newest && newest !== open.lastClientMessage) {
          open.lastClientMessage = newest;
          requestRead(open);
          return true;
        }
        return false;
      }
      closeConversation('switch');
      if (id && bridgeBase()) {
        openConversation({ id: id, nameElement: found.nameElement, lastClientMessage: found.lastClientMessage });
      }
      return false;
    }

    // ------------------------------------------------------------------ page events

    var onVisibility = guard(function () {
      if (document.hidden || !open) {
        return;
      }
      open.heartbeat.resume();
      open.presenceLoop.resume();
      if (open.readPending) {
        requestRead(open);
      }
    });

    var onPageHide = guard(function () {
      closeConversation('unload');
    });

    var onPageShow = guard(function (event) {
      if (event && event.persisted) {
        sync(); // back from the back/forward cache
      }
    });

    function listen() {
      if (listening) {
        return;
      }
      listening = true;
      document.addEventListener('visibilitychange', onVisibility);
      window.addEventListener('pagehide', onPageHide);
      window.addEventListener('pageshow', onPageShow);
    }

    function unlisten() {
      if (!listening) {
        return;
      }
      listening = false;
      document.removeEventListener('visibilitychange', onVisibility);
      window.removeEventListener('pagehide', onPageHide);
      window.removeEventListener('pageshow', onPageShow);
    }

    function watch() {
      watchTimer = later(function () {
        watchTimer = null;
        sync();
        if (started) {
          watch();
        }
      }, timings.watchMs);
    }

    function start() {
      if (started) {
        return;
      }
      started = true;
      ensureStylesheet();
      listen();
      sync();
      watch();
    }

    function stop() {
      started = false;
      if (watchTimer) {
        window.clearTimeout(watchTimer);
        watchTimer = null;
      }
      closeConversation('destroy');
      unlisten();
    }

    // ------------------------------------------------------------------ hooks for the host

    /** The host tells the widget a chat opened, switched or closed (it also notices alone). */
    self.onConversationChanged = guard(function () {
      sync();
    });

    /** The host tells the widget a new client message appeared in the open chat. */
    self.onClientMessage = guard(function () {
      if (!sync() && open) {
        requestRead(open);
      }
    });

    /** Overrides timings (tests use short ones); unknown keys and non-positive values are ignored. */
    self.configureTimings = guard(function (overrides) {
      $.each(overrides || {}, function (key, value) {
        if (Object.prototype.hasOwnProperty.call(DEFAULT_TIMINGS, key) && typeof value === 'number' && value > 0) {
          timings[key] = value;
        }
      });
      return $.extend({}, timings);
    });

    self.timings = function () {
      return $.extend({}, timings);
    };

    /** The widget's recent internal notes (failures swallowed), for support. */
    self.diagnostics = function () {
      return diagnostics.slice();
    };

    // ------------------------------------------------------------------ Kommo's callbacks

    this.callbacks = {
      render: guard(function () {
        ensureStylesheet();
        return true;
      }),
      init: guard(function () {
        start();
        return true;
      }),
      bind_actions: guard(function () {
        listen();
        return true;
      }),
      settings: guard(function () {
        return true;
      }),
      onSave: guard(function () {
        // The settings form already requires bridge_url; a saved change takes effect on the
        // next conversation the manager opens.
        return true;
      }),
      destroy: guard(function () {
        stop();
        return true;
      })
    };

    // Guarded callbacks return undefined when they throw; Kommo expects true.
    $.each(this.callbacks, function (name, callback) {
      self.callbacks[name] = function () {
        var result = callback.apply(this, arguments);
        return result === undefined ? true : result;
      };
    });

    return this;
  };

  CustomWidget.DEFAULT_TIMINGS = DEFAULT_TIMINGS;
  CustomWidget.KOMMO_DOM = KOMMO_DOM;
  return CustomWidget;
});
