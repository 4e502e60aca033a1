// The playground's page: the manager's pane plays Kommo, the client's pane plays a messenger on
// the chat service. Each action goes to a dev-server route that builds and signs what the real
// peer would send and passes it through the bridge's own routes; what the bridge sends to the
// stand-ins of amojo and the chat service arrives on /_playground/events and drives both panes.
'use strict';

(() => {
  // How often each side repeats itself, as the real peers do.
  const MANAGER_TYPING_EVERY_MS = 3000; // Kommo's typing webhook, while the manager types
  const CLIENT_TYPING_EVERY_MS = 3000; // typing.started, within the bridge's 6 s default ttl
  const CLIENT_TYPING_IDLE_MS = 4000; // no keystroke this long: typing.stopped
  const KOMMO_SHOWS_TYPING_MS = 5000; // Kommo shows "typing…" this long after each typing call
  const HEARTBEAT_EVERY_MS = 20000; // the widget's viewing and the messenger's presence
  const PRESENCE_POLL_MS = 2000; // the widget asking for the client's presence
  const READ_AFTER_MS = 700; // a message on screen this long counts as read
  const WIRE_LIMIT = 400;
  // The reactions the client's messenger offers (the dev server signs these and no other).
  const REACTIONS = ['👍', '❤️', '😂', '🙏'];

  const $ = (selector) => document.querySelector(selector);
  const testid = (name) => document.querySelector(`[data-testid="${name}"]`);
  const conversation = `pg-${Math.random().toString(16).slice(2, 10)}`;
  const visible = () => document.visibilityState === 'visible';
  const RANK = { sent: 0, delivered: 1, read: 2, failed: 3 };
  let about = { client: { id: '', name: 'the client' }, manager: { id: '', name: 'the manager' } };

  // ---------------------------------------------------------------- calls the page makes

  /** Plays one peer's action; resolves to {status, sent, answer}, never rejects. */
  async function play(action, fields = {}) {
    try {
      const response = await fetch(`/_playground/${action}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ conversation_id: conversation, ...fields }),
      });
      const body = await response.json().catch(() => ({}));
      return { status: response.status, sent: body.sent, answer: body.answer ?? body };
    } catch (error) {
      return { status: 0, answer: { error: String(error) } };
    }
  }

  /** For a page going away: a beacon survives the unload where a fetch may not. */
  function beacon(action) {
    navigator.sendBeacon(`/_playground/${action}`, JSON.stringify({ conversation_id: conversation }));
  }

  // ---------------------------------------------------------------- the panes

  function time(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  /** Appends a bubble to a pane's list; `mine` for the pane's own side. */
  function addMessage(list, { text, mine, id, status, quote }) {
    const item = document.createElement('li');
    item.className = `message${mine ? ' mine' : ''}`;
    if (id) item.dataset.msgid = id;
    if (status) item.dataset.status = status;
    const bubble = document.createElement('div');
    bubble.className = 'bubble';
    const words = document.createElement('span');
    words.className = 'text';
    words.textContent = text;
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = time(Date.now());
    if (mine) {
      const tick = document.createElement('span');
      tick.className = 'tick';
      meta.append(' ', tick);
    }
    if (quote) {
      const quoted = document.createElement('span');
      quoted.className = 'quote';
      quoted.textContent = quote;
      bubble.append(quoted);
    }
    bubble.append(words, meta);
    item.append(bubble);
    list.append(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  /** The text of the message `id` in `list`, to quote it; undefined when it is not there. */
  function textOf(list, id) {
    if (!id) return undefined;
    return list.querySelector(`[data-msgid="${CSS.escape(id)}"] .text`)?.textContent;
  }

  /**
   * A pane's reply: "reply" on a message the pane received quotes it in the next message sent
   * from that pane's composer (Esc cancels).
   */
  function replies(composer, note) {
    const state = { to: null };
    const cancel = () => { state.to = null; note.hidden = true; };
    composer.addEventListener('keydown', (event) => { if (event.key === 'Escape') cancel(); });
    state.cancel = cancel;
    state.offer = (item) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'edit';
      button.dataset.action = 'reply';
      button.textContent = 'reply';
      button.addEventListener('click', () => {
        state.to = { id: item.dataset.msgid, text: item.querySelector('.text').textContent };
        note.textContent = `replying to “${state.to.text}”: Esc cancels`;
        note.hidden = false;
        composer.focus();
      });
      item.querySelector('.meta').prepend(button, ' ');
    };
    /** The quote for the message being sent, and forgets it. */
    state.take = () => {
      const to = state.to;
      cancel();
      return to;
    };
    return state;
  }

  /** Moves a message's status forward (sent → delivered → read; failed is final). */
  function advance(item, status) {
    if (!item) return;
    const now = item.dataset.status;
    if (now === 'failed' || (RANK[status] ?? -1) <= (RANK[now] ?? -1)) return;
    item.dataset.status = status;
  }

  function showFor(element, ms, timerKey) {
    element.hidden = false;
    clearTimeout(element[timerKey]);
    element[timerKey] = setTimeout(() => { element.hidden = true; }, ms);
  }

  function hide(element, timerKey) {
    clearTimeout(element[timerKey]);
    element.hidden = true;
  }

  function setPresence(element, online, lastSeenMs) {
    element.dataset.state = online ? 'online' : 'offline';
    if (online) element.textContent = 'online';
    else if (lastSeenMs) element.textContent = `last seen ${time(lastSeenMs)}`;
    else element.textContent = 'never seen';
  }

  // ---------------------------------------------------------------- the manager (Kommo)

  const managerList = $('#manager-messages');
  const managerReplies = replies(testid('manager-composer'), $('#manager-replying'));
  const managerComposer = testid('manager-composer');
  const managerSeesTyping = testid('manager-sees-typing');
  const clientPresence = testid('client-presence');
  let managerTypingSentAt = 0;

  managerComposer.addEventListener('input', () => {
    // Kommo repeats its typing webhook while the manager keeps typing; it never says "stopped":
    // the bridge ends the typing when `expired_at` passes or the message arrives.
    if (!managerComposer.value.trim() || Date.now() - managerTypingSentAt < MANAGER_TYPING_EVERY_MS) return;
    managerTypingSentAt = Date.now();
    play('kommo/typing');
  });
  managerComposer.addEventListener('keydown', submitOnEnter('#manager-form'));

  $('#manager-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = managerComposer.value;
    if (!text.trim()) return;
    managerComposer.value = '';
    managerTypingSentAt = 0;
    const quoting = managerReplies.take();
    const item = addMessage(managerList, { text, mine: true, status: 'sent', quote: quoting?.text });
    const { status, sent } = await play('kommo/message', { text, reply_to_msgid: quoting?.id });
    const msgid = sent?.message?.message?.id;
    if (msgid) item.dataset.msgid = msgid;
    if (status !== 200) item.dataset.status = 'failed';
    // Delivery statuses may have come before the answer: apply what is known.
    for (const report of pendingStatus.get(msgid) ?? []) applyDeliveryStatus(item, report);
    pendingStatus.delete(msgid);
  });

  /** amojo's delivery_status calls about manager messages whose bubble did not know its id yet. */
  const pendingStatus = new Map();

  /** One delivery_status call of the bridge to amojo, on the manager's message it names. */
  function applyDeliveryStatus(item, report) {
    const status = { 1: 'delivered', 2: 'read', '-1': 'failed' }[String(report.delivery_status)];
    if (!status) return;
    advance(item, status);
    if (status === 'failed') item.title = `failed: ${report.error_code ?? ''} ${report.error ?? ''}`.trim();
  }

  /** The manager has the conversation open: tell the bridge it is read (as the widget does). */
  function managerReads() {
    if (visible()) play('kommo/read');
  }

  async function pollClientPresence() {
    const { status, answer } = await play('kommo/presence');
    if (status !== 200 || !answer?.client) return;
    const seen = answer.client.last_seen_at ? answer.client.last_seen_at * 1000 : null;
    setPresence(clientPresence, answer.client.online, seen);
  }

  function managerViewing() {
    if (visible()) play('kommo/viewing');
  }

  // ---------------------------------------------------------------- the client (messenger)

  const clientList = $('#client-messages');
  const clientReplies = replies(testid('client-composer'), $('#client-replying'));
  const clientComposer = testid('client-composer');
  const clientSeesTyping = testid('client-sees-typing');
  const managerPresence = testid('manager-presence');
  let clientTypingSentAt = 0;
  let clientIdleTimer = null;

  function clientStoppedTyping() {
    clearTimeout(clientIdleTimer);
    if (!clientTypingSentAt) return;
    clientTypingSentAt = 0;
    play('chat/stopped');
  }

  clientComposer.addEventListener('input', () => {
    clearTimeout(clientIdleTimer);
    if (editing) return; // an edit is not typing a new message
    if (!clientComposer.value.trim()) {
      clientStoppedTyping();
      return;
    }
    clientIdleTimer = setTimeout(clientStoppedTyping, CLIENT_TYPING_IDLE_MS);
    if (Date.now() - clientTypingSentAt < CLIENT_TYPING_EVERY_MS) return;
    clientTypingSentAt = Date.now();
    play('chat/typing');
  });
  clientComposer.addEventListener('keydown', submitOnEnter('#client-form'));

  /** The client's message being edited (its bubble), while the composer holds its new text. */
  let editing = null;
  const editingNote = $('#client-editing');

  function startEditing(item) {
    editing = item;
    clientComposer.value = item.querySelector('.text').textContent;
    editingNote.hidden = false;
    clientComposer.focus();
  }

  function stopEditing() {
    editing = null;
    editingNote.hidden = true;
    clientComposer.value = '';
  }

  clientComposer.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && editing) stopEditing();
  });

  $('#client-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = clientComposer.value;
    if (!text.trim()) return;
    if (editing) {
      const item = editing;
      stopEditing();
      const { status } = await play('chat/edit', { msgid: item.dataset.msgid, text });
      if (status === 200) {
        item.querySelector('.text').textContent = text;
        item.dataset.edited = 'true';
      }
      return;
    }
    clientComposer.value = '';
    // message.created ends the client's typing at the bridge: no typing.stopped needed.
    clearTimeout(clientIdleTimer);
    clientTypingSentAt = 0;
    const quoting = clientReplies.take();
    const item = addMessage(clientList, { text, mine: true, status: 'sent', quote: quoting?.text });
    const { status, sent } = await play('chat/message', { text, reply_to_reference: quoting?.id });
    if (sent?.msgid) item.dataset.msgid = sent.msgid;
    if (status !== 200) {
      item.dataset.status = 'failed';
      return;
    }
    const edit = document.createElement('button');
    edit.type = 'button';
    edit.className = 'edit';
    edit.dataset.action = 'edit';
    edit.textContent = 'edit';
    edit.addEventListener('click', () => startEditing(item));
    item.querySelector('.meta').prepend(edit, ' ');
  });

  /**
   * A manager's message reached the messenger: delivered now, read once it was on screen; or,
   * when the control says so, refused with its error code (the bridge tells Kommo: failed).
   */
  function clientReceives(event) {
    // A retry of a message the messenger already took (its answer came too late for the
    // bridge): a messenger keeps one copy per reference.
    if (event.reference && clientList.querySelector(`[data-msgid="${CSS.escape(event.reference)}"]`)) return;
    hide(clientSeesTyping, 'typingTimer');
    // Kommo's reply_to, carried through as Kommo gave it, names the client's message by msgid.
    const quote = textOf(clientList, event.message?.reply_to?.message?.msgid);
    const item = addMessage(clientList, {
      text: event.message?.text ?? `(${event.message?.type ?? 'message'})`, mine: false, id: event.reference, quote,
    });
    const reference = event.reference;
    if (!reference) return;
    const refuseWith = Number(testid('client-delivery').value);
    if (refuseWith) {
      item.classList.add('refused');
      item.title = `refused with ${refuseWith}`;
      play('chat/status', { reference, status: 'failed', error_code: refuseWith });
      return;
    }
    play('chat/status', { reference, status: 'delivered' });
    offerReactions(item, reference);
    clientReplies.offer(item);
    unread.push(reference);
    setTimeout(clientReads, READ_AFTER_MS);
  }

  /** The messenger's reaction buttons under a manager's message: one reaction, again to take it back. */
  function offerReactions(item, reference) {
    const row = document.createElement('span');
    row.className = 'reactions';
    for (const emoji of REACTIONS) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'react';
      button.dataset.emoji = emoji;
      button.textContent = emoji;
      button.setAttribute('aria-label', `react with ${emoji}`);
      button.addEventListener('click', () => {
        const taken = item.dataset.reaction === emoji;
        for (const other of row.children) other.classList.toggle('chosen', !taken && other === button);
        if (taken) delete item.dataset.reaction;
        else item.dataset.reaction = emoji;
        play(taken ? 'chat/unreact' : 'chat/react', { reference, emoji });
      });
      row.append(button);
    }
    item.querySelector('.bubble').append(row);
  }

  /** Manager messages the client has not seen yet (the pane was hidden). */
  const unread = [];
  function clientReads() {
    if (!visible()) return;
    while (unread.length) play('chat/status', { reference: unread.shift(), status: 'read' });
  }

  function clientOnline(kind) {
    if (visible()) play(kind);
  }

  // ---------------------------------------------------------------- what the bridge sent

  function fromBridge(record) {
    const body = record.body || {};
    if (record.to === 'amojo') {
      const path = record.path || '';
      if (path.endsWith('/typing')) {
        showFor(managerSeesTyping, KOMMO_SHOWS_TYPING_MS, 'typingTimer');
      } else if (path.endsWith('/react')) {
        // The client's reaction, as Kommo shows it on the manager's message.
        const item = managerList.querySelector(`[data-msgid="${CSS.escape(body.id || body.msgid || '')}"]`);
        if (!item) return;
        let badge = item.querySelector('.reaction');
        if (!badge) {
          badge = document.createElement('span');
          badge.className = 'reaction';
          item.querySelector('.bubble').append(badge);
        }
        if (body.type === 'react' && body.emoji) {
          item.dataset.reaction = body.emoji;
          badge.textContent = body.emoji;
        } else {
          delete item.dataset.reaction;
          badge.remove();
        }
      } else if (path.endsWith('/delivery_status')) {
        const item = managerList.querySelector(`[data-msgid="${CSS.escape(body.msgid || '')}"]`);
        if (item) applyDeliveryStatus(item, body);
        else pendingStatus.set(body.msgid, [...(pendingStatus.get(body.msgid) ?? []), body]);
      } else if (body.event_type === 'edit_message' && body.payload) {
        // The client edited a message: Kommo shows it as it reads now.
        const item = managerList.querySelector(`[data-msgid="${CSS.escape(body.payload.msgid || '')}"]`);
        if (!item) return;
        item.querySelector('.text').textContent = body.payload.message?.text ?? '';
        item.dataset.edited = 'true';
      } else if (body.event_type === 'new_message' && body.payload) {
        // The client's message, imported into Kommo: the manager's pane shows it.
        if (body.payload.conversation_id !== conversation) return;
        hide(managerSeesTyping, 'typingTimer');
        const quote = textOf(managerList, body.payload.reply_to?.message?.id);
        const item = addMessage(managerList, {
          text: body.payload.message?.text ?? '(message)', mine: false, id: body.payload.msgid, quote,
        });
        managerReplies.offer(item);
        setTimeout(managerReads, READ_AFTER_MS);
      }
      return;
    }
    if (body.conversation_id && body.conversation_id !== conversation) return;
    switch (body.type) {
      case 'message.created':
        // Answered 503, it never reached the messenger.
        if (!record.down) clientReceives(body);
        break;
      case 'typing.started': {
        const until = body.expires_at ? body.expires_at * 1000 - Date.now() + 1000 : 6000;
        showFor(clientSeesTyping, Math.max(until, 1000), 'typingTimer');
        break;
      }
      case 'typing.stopped':
        hide(clientSeesTyping, 'typingTimer');
        break;
      case 'presence.changed':
        setPresence(managerPresence, body.online, Date.now());
        break;
      case 'message.delivered':
        advance(clientList.querySelector(`[data-msgid="${CSS.escape(body.msgid || '')}"]`), 'delivered');
        break;
      case 'message.read':
        // Read up to this message: every earlier one of the client's too.
        for (const item of clientList.querySelectorAll('.mine')) {
          advance(item, 'read');
          if (item.dataset.msgid === body.msgid) break;
        }
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------- the wire

  const wire = $('#wire');
  const showPolls = $('#show-polls');
  const QUIET = /presence\.heartbeat|^GET /;

  function describe(record) {
    const body = record.body || {};
    if (record.from === 'bridge') {
      const status = { 1: 'delivered', 2: 'read', '-1': `failed ${body.error_code ?? ''}` }[String(body.delivery_status)];
      const what = body.type || body.event_type || (record.path || '').split('/').pop();
      return status ? `${what} ${status}` : what;
    }
    if (body.type === 'message.status') return `message.status ${body.status} ${body.error_code ?? ''}`.trim();
    return body.type || (body.action ? Object.keys(body.action)[0] : body.message ? 'message' : body.state)
      || (record.path || '').split('/').pop();
  }

  function addToWire(record) {
    const item = document.createElement('li');
    const what = describe(record);
    item.dataset.quiet = QUIET.test(what) || QUIET.test(`${record.method} `) ? 'true' : 'false';
    item.hidden = item.dataset.quiet === 'true' && !showPolls.checked;
    item.dataset.from = record.from;
    const line = document.createElement('div');
    line.className = 'line';
    const cell = (className, text) => {
      const span = document.createElement('span');
      span.className = className;
      span.textContent = text;
      line.append(span);
      return span;
    };
    cell('at', new Date(record.at_ms || Date.now()).toISOString().slice(11, 23));
    cell(`tag ${record.from === 'bridge' ? 'bridge' : 'page'}`, `${record.from} → ${record.to}`);
    cell('what', what);
    cell('route', `${record.method} ${record.path}`);
    if (record.from === 'bridge') {
      cell(record.signature_ok ? 'ok' : 'bad', record.signature_ok ? 'signature checked ✓' : 'signature INVALID');
      if (record.down) cell('bad', 'answered 503: down on cue');
      if (record.slow_ms) cell('bad', `slowed: answered after ${record.slow_ms / 1000} s, past the bridge's timeout`);
    } else {
      cell(record.status === 200 ? 'ok' : 'bad', `answered ${record.status}`);
    }
    const details = document.createElement('details');
    const summary = document.createElement('summary');
    summary.textContent = 'body';
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(record.body, null, 2)
      + (record.answer !== undefined ? `\n\nanswer: ${JSON.stringify(record.answer)}` : '');
    details.append(summary, pre);
    item.append(line, details);
    wire.prepend(item);
    while (wire.children.length > WIRE_LIMIT) wire.lastChild.remove();
  }

  showPolls.addEventListener('change', () => {
    for (const item of wire.querySelectorAll('[data-quiet="true"]')) item.hidden = !showPolls.checked;
  });
  $('#clear-wire').addEventListener('click', () => wire.replaceChildren());

  // The peers' fault control: a stand-in that is down answers the bridge 503 until it is up; one
  // that is slow answers each call only after the bridge's timeout for it has passed.
  for (const [name, field] of [
    ['amojo-down', 'amojo_down'], ['chat-service-down', 'chat_service_down'],
    ['amojo-slow', 'amojo_slow'], ['chat-service-slow', 'chat_service_slow'],
  ]) {
    const box = testid(name);
    box.addEventListener('change', async () => {
      try {
        const response = await fetch('/_playground/faults', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ [field]: box.checked }),
        });
        const state = await response.json();
        box.checked = state[field] === true;
      } catch {
        box.checked = !box.checked;
      }
      box.closest('label').dataset.applied = String(box.checked);
    });
  }

  function connectWire() {
    const state = $('#wire-state');
    const events = new EventSource('/_playground/events');
    events.onopen = () => { state.textContent = 'live'; state.dataset.state = 'open'; };
    events.onerror = () => { state.textContent = 'reconnecting…'; state.dataset.state = 'closed'; };
    events.onmessage = (message) => {
      let record;
      try { record = JSON.parse(message.data); } catch { return; }
      if (record.skipped) return;
      const path = record.path || '';
      // Another tab's conversation is not this page's business.
      if (path.includes('/conversations/') && !path.includes(`/conversations/${conversation}/`)) return;
      const body = record.body || {};
      const whose = body.conversation_id ?? body.payload?.conversation_id
        ?? body.message?.conversation?.client_id ?? body.action?.typing?.conversation?.client_id;
      if (whose !== undefined && whose !== conversation) return;
      addToWire(record);
      if (record.from === 'bridge') fromBridge(record);
    };
    return new Promise((resolve) => events.addEventListener('open', resolve, { once: true }));
  }

  function submitOnEnter(form) {
    return (event) => {
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        $(form).requestSubmit();
      }
    };
  }

  // ---------------------------------------------------------------- start

  async function start() {
    $('#conversation').textContent = conversation;
    try {
      about = await (await fetch('/_playground/about')).json();
      $('#scope').textContent = about.scope_id;
      $('#client-name').textContent = about.client.name;
      $('#manager-name').textContent = about.manager.name;
    } catch { /* the names are decoration */ }
    await connectWire();
    document.body.dataset.ready = 'true';
    // Both sides come online: the messenger reports the client, the widget the manager.
    clientOnline('chat/online');
    managerViewing();
    setInterval(() => clientOnline('chat/heartbeat'), HEARTBEAT_EVERY_MS);
    setInterval(managerViewing, HEARTBEAT_EVERY_MS);
    setInterval(pollClientPresence, PRESENCE_POLL_MS);
    pollClientPresence();
    document.addEventListener('visibilitychange', () => {
      if (visible()) {
        clientOnline('chat/online');
        managerViewing();
        managerReads();
        clientReads();
      } else {
        play('chat/offline');
        play('kommo/left');
      }
    });
    window.addEventListener('pagehide', () => {
      beacon('chat/offline');
      beacon('kommo/left');
    });
  }

  start();
})();
