/*
 * The Kommo host, played for the widget test. Query parameters:
 *   bridge   the widget's bridge_url setting
 *   timings  JSON handed to widget.configureTimings() before init (absent: the real defaults)
 *   token    "good" (signed with the dev server's integration secret) or "bad" (another key)
 * It loads widget/script.js through RequireJS as Kommo does, puts Kommo's widget API on the
 * instance, calls render → init → bind_actions, and exposes window.kommoHost for the test:
 * open / close / clientMessage change the chat view (and, unless {notify: false}, call the
 * widget's hooks), setHidden plays the tab being hidden, destroy calls the destroy callback.
 */
(function () {
  'use strict';
  var query = new URLSearchParams(window.location.search);
  var captured = { errors: [], rejections: [] };
  window.addEventListener('error', function (event) {
    captured.errors.push(String(event.message || event.error));
  });
  window.addEventListener('unhandledrejection', function (event) {
    captured.rejections.push(String(event.reason && event.reason.message ? event.reason.message : event.reason));
  });

  var hidden = false;
  Object.defineProperty(document, 'hidden', { configurable: true, get: function () { return hidden; } });
  Object.defineProperty(document, 'visibilityState', {
    configurable: true,
    get: function () { return hidden ? 'hidden' : 'visible'; }
  });

  var clicks = 0;
  document.getElementById('host-button').addEventListener('click', function () {
    clicks += 1;
    document.getElementById('host-clicks').textContent = String(clicks);
  });

  var readyResolve;
  var host = {
    ready: new Promise(function (resolve) { readyResolve = resolve; }),
    captured: captured,
    calls: [],
    widget: null,
    CustomWidget: null,
    open: null, // the chat shown: {id, name}
    clicks: function () { return clicks; }
  };
  window.kommoHost = host;

  require.config({ paths: { jquery: '/vendor/jquery' } });

  // RequireJS has no JSON loader by default: the language file is fetched beside it.
  function loadLang() {
    return fetch('/widget/i18n/en.json').then(function (r) { return r.json(); });
  }

  function settings() {
    return {
      bridge_url: query.get('bridge') || '',
      path: '/widget',
      version: '1.0.0',
      widget_code: 'kommo_bridge_presence',
      widget_active: 'Y'
    };
  }

  // Kommo's $authorizedAjax: a one-time token from Kommo's side (here the harness server,
  // which signs it HS256), then jQuery's $.ajax with the X-Auth-Token header; the answer is a
  // jQuery Deferred like $.ajax's.
  // Every call is also logged with the page's own clock (kommoHost.calls): `at` when the widget
  // asked, `end` when its answer (or failure) was handed back.
  function authorizedAjax($) {
    return function (options) {
      var deferred = $.Deferred();
      var state = null;
      try { state = JSON.parse(options.data || 'null').state || null; } catch (e) { state = null; }
      var entry = { at: Date.now(), end: null, method: options.type, url: options.url, state: state, status: null };
      host.calls.push(entry);
      function finish(status) { entry.end = Date.now(); entry.status = status; }
      $.ajax({ url: '/__kommo/token?mode=' + encodeURIComponent(query.get('token') || 'good'), dataType: 'json', cache: false })
        .done(function (answer) {
          var request = $.extend({}, options);
          request.headers = $.extend({}, options.headers, { 'X-Auth-Token': answer.token });
          $.ajax(request)
            .done(function (data, text, xhr) { entry.answer = data; finish(xhr.status); deferred.resolve.apply(null, arguments); })
            .fail(function (xhr) { finish(xhr.status); deferred.reject.apply(null, arguments); });
        })
        .fail(function (xhr) { finish(-1); deferred.reject.apply(null, arguments); });
      return deferred.promise();
    };
  }

  function renderList() {
    var list = document.getElementById('chat-list');
    list.textContent = '';
    if (host.open) {
      var item = document.createElement('li');
      item.className = 'is-open';
      item.textContent = host.open.name;
      list.appendChild(item);
    }
  }

  function notify(options, hook) {
    if (!options || options.notify !== false) {
      host.widget[hook]();
    }
  }

  host.openChat = function (id, name, messages, options) {
    var slot = document.getElementById('chat-slot');
    slot.textContent = '';
    var chat = document.createElement('section');
    chat.className = 'kh-chat';
    chat.setAttribute('data-chat-id', id);
    var header = chat.appendChild(document.createElement('header'));
    header.className = 'kh-chat__header';
    var avatar = header.appendChild(document.createElement('span'));
    avatar.className = 'kh-avatar';
    avatar.textContent = name.charAt(0);
    var nameElement = header.appendChild(document.createElement('span'));
    nameElement.className = 'feed-compose-user__name';
    nameElement.textContent = name;
    var feed = chat.appendChild(document.createElement('div'));
    feed.className = 'kh-feed';
    var compose = chat.appendChild(document.createElement('footer'));
    compose.className = 'feed-compose';
    compose.textContent = 'Write a message…';
    slot.appendChild(chat);
    host.open = { id: id, name: name };
    (messages || []).forEach(function (m) { appendMessage(m.msgid, m.text); });
    renderList();
    var openedAt = Date.now();
    notify(options, 'onConversationChanged');
    return openedAt;
  };

  host.closeChat = function (options) {
    var slot = document.getElementById('chat-slot');
    slot.innerHTML = '<div class="kh-empty">No chat open</div>';
    host.open = null;
    renderList();
    notify(options, 'onConversationChanged');
  };

  function appendMessage(msgid, text) {
    var feed = document.querySelector('.kh-chat .kh-feed');
    var note = document.createElement('div');
    note.className = 'feed-note-incoming';
    note.setAttribute('data-id', msgid);
    note.textContent = text;
    feed.appendChild(note);
  }

  host.clientMessage = function (msgid, text, options) {
    appendMessage(msgid, text || 'A new message');
    notify(options, 'onClientMessage');
  };

  host.setHidden = function (value) {
    hidden = !!value;
    document.dispatchEvent(new Event('visibilitychange'));
  };

  host.destroy = function () {
    return host.widget.callbacks.destroy();
  };

  Promise.all([
    loadLang(),
    new Promise(function (resolve, reject) {
      require(['jquery', '/widget/script.js'], function ($, CustomWidget) { resolve([$, CustomWidget]); }, reject);
    })
  ]).then(function (loaded) {
    var lang = loaded[0];
    var $ = loaded[1][0];
    var CustomWidget = loaded[1][1];
    var widget = new CustomWidget();
    // What Kommo puts on every widget instance.
    widget.params = settings();
    widget.get_settings = settings;
    widget.get_version = function () { return '1.0.0'; };
    widget.i18n = function (key) { return lang[key]; };
    widget.system = function () { return { area: 'lcard', amouser_id: 42, subdomain: 'harness', lang: 'en' }; };
    widget.$authorizedAjax = authorizedAjax($);
    if (query.get('timings')) {
      widget.configureTimings(JSON.parse(query.get('timings')));
    }
    host.widget = widget;
    host.CustomWidget = CustomWidget;
    var results = [widget.callbacks.render(), widget.callbacks.init(), widget.callbacks.bind_actions()];
    readyResolve(results);
  }, function (error) {
    captured.errors.push('harness: ' + error);
  });
})();
