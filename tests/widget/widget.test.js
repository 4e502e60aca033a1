// The Kommo UI widget (widget/) in headless Chromium, against the real dev server.
//
// A harness page on its own origin plays Kommo's host (RequireJS, jQuery, a $authorizedAjax
// that adds a real HS256 one-time token, a chat view that opens, switches and closes
// conversations); the widget calls the dev server (another origin, so CORS is exercised),
// which posts its events to a recording chat service here. Intervals are shortened through
// the widget's configureTimings() hook, except in one run on Playwright's fake clock that
// checks the real 15 s defaults. Prints "N passed, M failed" last; exits non-zero on failure.
//
//   node widget.test.js        (tests/widget/run installs what it needs and runs this)
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { chromium } = require('playwright-core');
const servers = require('./servers');

const ROOT = path.resolve(__dirname, '../..');
const OUT = path.join(ROOT, 'target/widget');
const DEV_SERVER = path.join(ROOT, 'target/debug/dev-server');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const WINDOW_S = 5; // PRESENCE_WINDOW_S given to the dev server
const GRACE_S = 1; // PRESENCE_GRACE_S
const FAST = { heartbeatMs: 1000, presenceMs: 1000, watchMs: 200, backoffBaseMs: 200, backoffMaxMs: 3200, requestTimeoutMs: 3000 };
const SCOPE = 'chan_acc-1'; // KOMMO_CHANNEL_ID=chan, KOMMO_ACCOUNTS=1:acc-1
const RUN = crypto.randomBytes(3).toString('hex');
const conv = (name) => `conv-${name}-${RUN}`;

// ------------------------------------------------------------------ a tiny runner

const results = [];
async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name} (${Date.now() - started} ms)\n     ${String(error && error.stack ? error.stack : error).split('\n').slice(0, 4).join('\n     ')}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, probe, timeoutMs, stepMs = 25) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

const gapsOf = (calls) => calls.slice(1).map((c, i) => c.t - calls[i].t);
// How long the widget waited after each attempt ended before it made the next one.
const waitsOf = (calls) => calls.slice(1).map((c, i) => c.at - calls[i].end);

// ------------------------------------------------------------------ the harness page

const ROUTE = /\/kommo\/ui\/conversations\/([^/?]+)\/(presence|read)(?:\?|$)/;

async function openHarness(browser, env, { bridge, timings = FAST, token = 'good', clock = false }) {
  const context = await browser.newContext({ viewport: { width: 760, height: 420 }, deviceScaleFactor: 2 });
  const page = await context.newPage();
  const h = { context, page, net: [], consoleErrors: [], pageErrors: [], dialogs: [] };
  // The network as Chromium saw it (headers, CORS answers; the unload keepalive fetch, which
  // bypasses $authorizedAjax, shows only here). Counting and timing use the host's log below.
  const byRequest = new Map();
  page.on('console', (m) => { if (m.type() === 'error') h.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => h.pageErrors.push(String(e)));
  page.on('dialog', (d) => { h.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  context.on('request', (request) => {
    const match = ROUTE.exec(request.url());
    if (!match || !['GET', 'POST'].includes(request.method())) return;
    let state = null;
    try { state = JSON.parse(request.postData() || 'null')?.state ?? null; } catch { state = null; }
    const call = { t: Date.now(), token: Boolean(request.headers()['x-auth-token']), conv: decodeURIComponent(match[1]), route: match[2], method: request.method(), state, status: null, failed: null, answer: null, allowOrigin: null };
    byRequest.set(request, call);
    h.net.push(call);
  });
  context.on('response', async (response) => {
    const call = byRequest.get(response.request());
    if (!call) return;
    call.allowOrigin = response.headers()['access-control-allow-origin'] || null;
    try { call.answer = await response.json(); } catch { call.answer = null; }
    call.status = response.status();
  });
  context.on('requestfailed', (request) => {
    const call = byRequest.get(request);
    if (!call) return;
    call.failed = request.failure()?.errorText || 'failed';
  });
  if (clock) await page.clock.install({ time: Date.now() });
  const query = new URLSearchParams({ bridge, token });
  if (timings) query.set('timings', JSON.stringify(timings));
  await page.goto(`${env.harness.base}/harness/index.html?${query}`);
  const callbacks = await page.evaluate(() => window.kommoHost.ready);
  assert(callbacks.every((r) => r === true), `render/init/bind_actions answered ${JSON.stringify(callbacks)}`);

  h.open = (id, name, messages = [], notify = true) =>
    page.evaluate(([i, n, m, y]) => window.kommoHost.openChat(i, n, m, { notify: y }), [id, name, messages, notify]);
  h.close = (notify = true) => page.evaluate((y) => window.kommoHost.closeChat({ notify: y }), notify);
  h.clientMessage = (msgid, text, notify = true) =>
    page.evaluate(([i, t, y]) => window.kommoHost.clientMessage(i, t, { notify: y }), [msgid, text, notify]);
  h.setHidden = (hidden) => page.evaluate((x) => window.kommoHost.setHidden(x), hidden);
  h.captured = () => page.evaluate(() => window.kommoHost.captured);
  // The widget's calls as the host page logged them, timed with the page's own clock (free of
  // the delays of the test's event stream): {at, end, method, conv, route, state, status, answer}.
  h.find = async (f) => (await page.evaluate(() => window.kommoHost.calls)).map((c) => {
    const match = ROUTE.exec(c.url);
    return { ...c, t: c.at, conv: match && decodeURIComponent(match[1]), route: match && match[2] };
  }).filter((c) => matches(c, f));
  h.count = async (f) => (await h.find(f)).length;
  return h;
}

function matches(call, f) {
  return (f.conv === undefined || call.conv === f.conv)
    && (f.route === undefined || call.route === f.route)
    && (f.method === undefined || call.method === f.method)
    && (f.state === undefined || call.state === f.state)
    && (f.since === undefined || call.t >= f.since)
    && (f.ok === undefined || (call.status === 200) === f.ok);
}

const VIEWING = { route: 'presence', method: 'POST', state: 'viewing' };
const LEFT = { route: 'presence', method: 'POST', state: 'left' };
const READ = { route: 'read', method: 'POST' };
const PRESENCE = { route: 'presence', method: 'GET' };

// ------------------------------------------------------------------ the bridge's two sides

function bridgeClient(env) {
  let clock = Date.now();
  return {
    async post(event) {
      const body = JSON.stringify(event);
      const answer = await fetch(`${env.dev.base}/chat/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...servers.webhookHeaders(env.chatSecret, body) },
        body,
      });
      assert(answer.status === 200, `POST /chat/events ${event.type} answered ${answer.status}: ${await answer.text()}`);
    },
    message(conversation, msgid, user) {
      clock = Math.max(clock + 1, Date.now());
      return this.post({
        type: 'message.created', scope_id: SCOPE, conversation_id: conversation, msgid,
        user: { id: user, name: 'Ana Client' }, message: { type: 'text', text: 'Is the blue one still available?' }, timestamp_ms: clock,
      });
    },
    online(conversation, user) {
      return this.post({ type: 'presence.online', scope_id: SCOPE, conversation_id: conversation, user_id: user });
    },
    async managers(conversation) {
      const query = new URLSearchParams({ scope_id: SCOPE, conversation_id: conversation });
      const answer = await fetch(`${env.dev.base}/chat/presence?${query}`, { headers: servers.webhookHeaders(env.chatSecret, '') });
      assert(answer.status === 200, `GET /chat/presence answered ${answer.status}`);
      return (await answer.json()).managers.map((m) => m.id);
    },
    // What the bridge posted to the chat service.
    events(type, f = {}) {
      return env.recorder.events.filter((e) => e.event && e.event.type === type
        && (f.conv === undefined || e.event.conversation_id === f.conv)
        && (f.msgid === undefined || e.event.msgid === f.msgid)
        && (f.online === undefined || e.event.online === f.online)
        && (f.since === undefined || e.at >= f.since));
    },
  };
}

// ------------------------------------------------------------------ scenarios

async function main() {
  assert(fs.existsSync(DEV_SERVER), `${DEV_SERVER} is missing: build it first (cargo build -p dev-server)`);
  assert(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  fs.mkdirSync(OUT, { recursive: true });
  const started = Date.now();

  const env = {
    integrationSecret: crypto.randomBytes(32).toString('hex'),
    chatSecret: `whsec_${crypto.randomBytes(32).toString('base64')}`,
  };
  env.recorder = await servers.startRecorder(env);
  env.harness = await servers.startStaticServer({ root: ROOT, integrationSecret: env.integrationSecret });
  env.failing = await servers.startFailingBridge();
  env.down = await servers.closedPort();
  // Never leave the dev server behind, however this process ends.
  process.on('exit', () => env.dev && env.dev.child.kill());
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));
  env.dev = await servers.startDevServer(DEV_SERVER, {
    KOMMO_INTEGRATION_SECRET: env.integrationSecret,
    KOMMO_ACCOUNTS: '1:acc-1',
    KOMMO_CHANNEL_ID: 'chan',
    KOMMO_CHANNEL_SECRET: crypto.randomBytes(20).toString('hex'),
    CHAT_SERVICE_SECRET: env.chatSecret,
    CHAT_SERVICE_URL: `${env.recorder.base}/events`,
    PRESENCE_WINDOW_S: String(WINDOW_S),
    PRESENCE_GRACE_S: String(GRACE_S),
  });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives each launch a fresh temporary user-data-dir of its own.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const bridge = bridgeClient(env);
  const pages = [];
  try {
    await scenarios(browser, env, bridge, pages);
  } finally {
    await browser.close().catch(() => {});
    env.dev.child.kill();
    for (const s of [env.recorder.server, env.harness.server, env.failing.server]) s.close();
  }
  if (process.env.WIDGET_TEST_DUMP) {
    for (const e of env.recorder.events) console.log(`     chat service got ${new Date(e.at).toISOString()} ${JSON.stringify(e.event)}`);
  }
  console.log(`widget test: ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

async function scenarios(browser, env, bridge, pages) {
  await check('widget/package makes a zip with manifest.json, script.js, i18n and images at its root', async () => {
    const zip = execFileSync(path.join(ROOT, 'widget/package'), { cwd: ROOT, encoding: 'utf8' }).trim();
    assert(zip.endsWith('target/widget/widget.zip'), `widget/package printed ${zip}`);
    const names = JSON.parse(execFileSync('python3', ['-c',
      'import json,sys,zipfile; print(json.dumps(zipfile.ZipFile(sys.argv[1]).namelist()))', path.resolve(ROOT, zip)], { encoding: 'utf8' }));
    for (const want of ['manifest.json', 'script.js', 'style.css', 'i18n/en.json', 'images/logo_min.png', 'images/logo_medium.png', 'images/logo.png']) {
      assert(names.includes(want), `the zip lacks ${want}: ${names}`);
    }
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'widget/manifest.json'), 'utf8'));
    assert(manifest.settings.bridge_url.type === 'text' && manifest.settings.bridge_url.required === true, 'bridge_url is a required text setting');
  });

  const h = await openHarness(browser, env, { bridge: env.dev.base });
  pages.push(h);
  const A = conv('a');
  const B = conv('b');
  const clientA = `client-a-${RUN}`;
  await bridge.message(A, 'a-1', clientA);
  let openedAt = 0;

  await check('opening a conversation: viewing, one read and a presence GET at once, answered 200 with CORS', async () => {
    openedAt = await h.open(A, 'Ana Client', [{ msgid: 'a-1', text: 'Is the blue one still available?' }]);
    await waitFor('viewing, read and GET answered', async () =>
      await h.count({ conv: A, ...VIEWING, ok: true }) >= 1 && await h.count({ conv: A, ...READ, ok: true }) === 1
      && await h.count({ conv: A, ...PRESENCE, ok: true }) >= 1, 2000);
    const calls = await h.find({ conv: A });
    assert(calls[0].t - openedAt < 100, `the first call went ${calls[0].t - openedAt} ms after opening`);
    assert(new Set(calls.slice(0, 3).map((c) => c.route + c.method)).size === 3, `the first calls: ${JSON.stringify(calls.slice(0, 3))}`);
    const origin = new URL(env.harness.base).origin;
    assert(origin !== new URL(env.dev.base).origin, 'the harness and the bridge share an origin');
    await waitFor('the network log', () => h.net.filter((c) => c.conv === A && c.status).length >= 3, 1000);
    for (const call of h.net.filter((c) => c.conv === A && c.status)) {
      assert(call.allowOrigin === origin, `a ${call.method} ${call.route} answered Access-Control-Allow-Origin ${call.allowOrigin}`);
    }
    const [read] = await h.find({ conv: A, ...READ });
    assert(read.answer?.read === 'a-1', `read answered ${JSON.stringify(read.answer)}`);
  });

  await check('the bridge pushes one message.read and one presence.changed online for the opening', async () => {
    await waitFor('message.read a-1 and presence.changed online', () =>
      bridge.events('message.read', { conv: A }).length === 1 && bridge.events('presence.changed', { conv: A, online: true }).length >= 1, 3000);
    const [read] = bridge.events('message.read', { conv: A });
    assert(read.event.msgid === 'a-1' && read.event.scope_id === SCOPE, `message.read was ${JSON.stringify(read.event)}`);
    const [changed] = bridge.events('presence.changed', { conv: A, online: true });
    assert(changed.event.manager.id === '42', `presence.changed named manager ${JSON.stringify(changed.event.manager)}`);
  });

  await check(`heartbeats every heartbeatMs (${FAST.heartbeatMs} ms) while open, one read per opening`, async () => {
    await waitFor('4 heartbeats', async () => await h.count({ conv: A, ...VIEWING }) >= 4, 5000);
    const gaps = gapsOf(await h.find({ conv: A, ...VIEWING }));
    for (const gap of gaps) {
      assert(gap >= 0.9 * FAST.heartbeatMs && gap <= 1.5 * FAST.heartbeatMs, `heartbeat gaps ${gaps} ms`);
    }
    assert(await h.count({ conv: A, ...READ }) === 1, `${await h.count({ conv: A, ...READ })} reads for one opening`);
    const presenceGaps = gapsOf(await h.find({ conv: A, ...PRESENCE }));
    assert(presenceGaps.every((g) => g >= 0.95 * FAST.presenceMs), `presence GETs closer than presenceMs: ${presenceGaps}`);
  });

  let onlineAt = 0;
  await check('the online mark appears beside the client\'s name within 2 s of presence.online', async () => {
    onlineAt = Date.now();
    await bridge.online(A, clientA);
    await h.page.locator('.kfc-presence--online').waitFor({ state: 'visible', timeout: 2000 });
    const shownAfter = Date.now() - onlineAt;
    assert(shownAfter <= 2000, `shown after ${shownAfter} ms`);
    const placed = await h.page.evaluate(() => {
      const name = document.querySelector('.feed-compose-user__name');
      const mark = name.nextElementSibling;
      return { className: mark && mark.className, text: mark && mark.textContent };
    });
    assert(/kfc-presence--online/.test(placed.className) && placed.text === 'online', `beside the name: ${JSON.stringify(placed)}`);
    await h.page.locator('.kh-chat').screenshot({ path: path.join(OUT, 'online-mark.png') });
    console.log(`     shown ${shownAfter} ms after presence.online; screenshot target/widget/online-mark.png`);
  });

  // Independent pages, run while the main page waits for the client's window to lapse: the
  // failure modes and the fake clock.
  const failures = [
    ['the bridge unreachable', env.down, 'good'],
    ['the bridge answering 401 (a token signed with another key)', env.dev.base, 'bad'],
    ['the bridge answering 500', env.failing.base, 'good'],
  ].map(([name, base, token], i) => runFailure(browser, env, name, base, token, conv(`f${i}`)));
  const clockRun = runDefaultsOnFakeClock(browser, env);

  await check(`the mark goes when the client's window (PRESENCE_WINDOW_S=${WINDOW_S}) lapses, showing "last seen"`, async () => {
    await h.page.locator('.kfc-presence--offline').waitFor({ state: 'visible', timeout: (WINDOW_S + 6) * 1000 });
    const goneAfter = Date.now() - onlineAt;
    // Offline at the first presence GET after the window: WINDOW_S to WINDOW_S + presenceMs, plus
    // slack for a loaded 2-core machine (CI builds the arm64 binaries beside this test).
    assert(goneAfter >= (WINDOW_S - 0.5) * 1000 && goneAfter <= WINDOW_S * 1000 + FAST.presenceMs + 4000, `offline ${goneAfter} ms after presence.online`);
    assert(await h.page.locator('.kfc-presence--online').count() === 0, 'an online mark is still shown');
    const label = await h.page.locator('.kfc-presence--offline').textContent();
    assert(/^last seen (just now|\d+ min ago)$/.test(label), `the offline mark reads "${label}"`);
    await h.page.locator('.kh-chat').screenshot({ path: path.join(OUT, 'last-seen-mark.png') });
    console.log(`     went ${goneAfter} ms after presence.online, reading "${label}"`);
  });

  await check('a hidden tab pauses heartbeats, GETs and reads; visible again, they resume (the read too)', async () => {
    await h.setHidden(true);
    await sleep(300); // let a call already on its way finish
    const since = Date.now();
    await bridge.message(A, 'a-2', clientA);
    await h.clientMessage('a-2', 'Hello? Anyone there?');
    await sleep(2.5 * FAST.heartbeatMs);
    assert(await h.count({ conv: A, since }) === 0, `calls while hidden: ${JSON.stringify(await h.find({ conv: A, since }))}`);
    const shown = Date.now();
    await h.setHidden(false);
    await waitFor('viewing, GET and the pending read after becoming visible', async () =>
      await h.count({ conv: A, ...VIEWING, since: shown }) >= 1 && await h.count({ conv: A, ...PRESENCE, since: shown }) >= 1
      && await h.count({ conv: A, ...READ, since: shown }) === 1, 1000);
    await waitFor('message.read a-2', () => bridge.events('message.read', { conv: A, msgid: 'a-2' }).length === 1, 3000);
    await sleep(1.5 * FAST.heartbeatMs);
    assert(await h.count({ conv: A, ...VIEWING, since: shown }) >= 2, 'heartbeats did not resume');
  });

  await check('a new client message while visible (host hook): exactly one read', async () => {
    const since = Date.now();
    await bridge.message(A, 'a-3', clientA);
    await h.clientMessage('a-3', 'I can pick it up today');
    await waitFor('one read', async () => await h.count({ conv: A, ...READ, since, ok: true }) === 1, 1000);
    await sleep(5 * FAST.watchMs);
    assert(await h.count({ conv: A, ...READ, since }) === 1, `${await h.count({ conv: A, ...READ, since })} reads for one message`);
    await waitFor('message.read a-3', () => bridge.events('message.read', { conv: A, msgid: 'a-3' }).length === 1, 3000);
  });

  await check('a new client message noticed on the page alone (no hook): exactly one read', async () => {
    const since = Date.now();
    await bridge.message(A, 'a-4', clientA);
    await h.clientMessage('a-4', 'Still there?', false);
    await waitFor('one read', async () => await h.count({ conv: A, ...READ, since, ok: true }) === 1, FAST.watchMs + 1000);
    await sleep(5 * FAST.watchMs);
    assert(await h.count({ conv: A, ...READ, since }) === 1, `${await h.count({ conv: A, ...READ, since })} reads for one message`);
    await waitFor('message.read a-4', () => bridge.events('message.read', { conv: A, msgid: 'a-4' }).length === 1, 3000);
  });

  await check('switching conversations: left for the old one, viewing and one read for the new one', async () => {
    const since = Date.now();
    await h.open(B, 'Bruno Client');
    await waitFor('left A, viewing B, read B', async () => await h.count({ conv: A, ...LEFT, since, ok: true }) === 1
      && await h.count({ conv: B, ...VIEWING, ok: true }) >= 1 && await h.count({ conv: B, ...READ, ok: true }) === 1, 1500);
    await sleep(1.5 * FAST.heartbeatMs);
    assert(await h.count({ conv: A, since }) === 1, `calls for the old conversation after switching: ${JSON.stringify(await h.find({ conv: A, since }))}`);
    assert(await h.page.locator('.kfc-presence').count() === 0, 'a mark is shown for a conversation whose client is unknown');
    await waitFor('presence.changed offline for A', () => bridge.events('presence.changed', { conv: A, online: false, since }).length >= 1, (GRACE_S + 3) * 1000);
  });

  await check('opening a conversation again: one read, and nothing re-reported', async () => {
    const since = Date.now();
    await h.open(A, 'Ana Client', [{ msgid: 'a-4', text: 'Still there?' }]);
    await waitFor('one read', async () => await h.count({ conv: A, ...READ, since, ok: true }) === 1, 1500);
    await sleep(3 * FAST.watchMs);
    assert(await h.count({ conv: A, ...READ, since }) === 1, 'more than one read for one opening');
    const [read] = (await h.find({ conv: A, ...READ, since }));
    assert(read.answer && read.answer.read === null, `the read answered ${JSON.stringify(read.answer)}`);
    assert(bridge.events('message.read', { conv: A }).length === 4, `message.read events for A: ${bridge.events('message.read', { conv: A }).length}`);
  });

  await check('closing the conversation: one left, then no more calls, the mark removed', async () => {
    const since = Date.now();
    await h.close();
    await waitFor('left A', async () => await h.count({ conv: A, ...LEFT, since, ok: true }) === 1, 1500);
    assert((await bridge.managers(A)).length === 0, 'the bridge still lists a manager in the closed conversation');
    await sleep(2 * FAST.heartbeatMs);
    assert(await h.count({ since }) === 1, `calls after closing: ${JSON.stringify(await h.find({ since }))}`);
    assert(await h.page.locator('.kfc-presence').count() === 0, 'a mark is left on the page');
  });

  await check('a conversation opened and closed on the page alone (no hook) is noticed within watchMs', async () => {
    const C = conv('c');
    await h.open(C, 'Carla Client', [], false);
    await waitFor('viewing C', async () => await h.count({ conv: C, ...VIEWING, ok: true }) >= 1, FAST.watchMs + 1000);
    await h.close(false);
    await waitFor('left C', async () => await h.count({ conv: C, ...LEFT, ok: true }) === 1, FAST.watchMs + 1000);
    assert(await h.count({ conv: C, ...READ }) === 1, 'not one read for the opening');
  });

  await check('destroy (Kommo leaving the area): left, then nothing more', async () => {
    const D = conv('d');
    await h.open(D, 'Dora Client');
    await waitFor('viewing D', async () => await h.count({ conv: D, ...VIEWING, ok: true }) >= 1, 1500);
    const since = Date.now();
    const answer = await h.page.evaluate(() => window.kommoHost.destroy());
    assert(answer === true, `destroy answered ${answer}`);
    await waitFor('left D', async () => await h.count({ conv: D, ...LEFT, since, ok: true }) === 1, 1500);
    await sleep(2 * FAST.heartbeatMs);
    assert(await h.count({ since }) === 1, `calls after destroy: ${JSON.stringify(await h.find({ since }))}`);
  });

  const E = conv('e');
  let unloadPage = null;
  let shownAt = 0;
  await check('pagehide: left goes as a keepalive fetch with the newest token, outside $authorizedAjax; pageshow reopens', async () => {
    const p = await openHarness(browser, env, { bridge: env.dev.base });
    pages.push(p);
    unloadPage = p;
    await p.open(E, 'Eva Client');
    await waitFor('two heartbeats', async () => await p.count({ conv: E, ...VIEWING, ok: true }) >= 2, 3000);
    const hid = Date.now();
    await p.page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true })));
    await waitFor('a left answered 200', () => p.net.some((c) => c.conv === E && c.state === 'left' && c.status === 200 && c.t >= hid), 1500);
    const left = p.net.filter((c) => c.conv === E && c.state === 'left');
    assert(left.length === 1 && left[0].token, `left requests: ${JSON.stringify(left)}`);
    assert(await p.count({ conv: E, ...LEFT }) === 0, 'the unload left went through $authorizedAjax');
    shownAt = Date.now();
    await p.page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true })));
    await waitFor('viewing again after pageshow', async () => await p.count({ conv: E, ...VIEWING, since: shownAt, ok: true }) >= 1, 1500);
  });

  await check('leaving the page for real: the keepalive left reaches the bridge before the window would lapse', async () => {
    const p = unloadPage;
    await waitFor('manager 42 listed by GET /chat/presence', async () => (await bridge.managers(E)).includes('42'), 1500);
    // The left turned the manager offline, so the first viewing after pageshow opened a new window.
    const reference = (await p.find({ conv: E, ...VIEWING, since: shownAt }))[0].t;
    await sleep(Math.max(0, reference + 1.5 * FAST.heartbeatMs - Date.now())); // a regular heartbeat in between
    await p.page.goto('about:blank');
    await waitFor('manager 42 gone from GET /chat/presence', async () => (await bridge.managers(E)).length === 0, 1500);
    const after = Date.now() - reference;
    assert(after < (WINDOW_S - 0.5) * 1000, `gone only ${after} ms after the window opened: it lapsed, no left came`);
    console.log(`     gone ${after} ms after the manager's window opened (PRESENCE_WINDOW_S=${WINDOW_S})`);
  });

  await check('no console errors, page errors, unhandled rejections or dialogs in normal operation', async () => {
    const clock = await clockRun;
    for (const p of [...pages, clock.h]) {
      assert(p.consoleErrors.length === 0, `console errors: ${p.consoleErrors}`);
      assert(p.pageErrors.length === 0, `page errors: ${p.pageErrors}`);
      assert(p.dialogs.length === 0, `dialogs: ${p.dialogs}`);
    }
    const captured = await h.captured();
    assert(captured.errors.length === 0 && captured.rejections.length === 0, `captured by the page: ${JSON.stringify(captured)}`);
    const unsigned = env.recorder.events.filter((e) => !e.signed);
    assert(unsigned.length === 0, `${unsigned.length} events reached the chat service unsigned`);
  });

  await check('the real defaults: heartbeat and presence refresh every 15 s (fake clock, real bridge)', async () => {
    const clock = await clockRun;
    if (clock.error) throw clock.error;
  });

  for (const failure of failures) {
    const outcome = await failure;
    await check(`${outcome.name}: the page keeps working, nothing thrown, no dialog, retries back off`, async () => {
      if (outcome.error) throw outcome.error;
      console.log(`     ${outcome.detail}`);
    });
  }
}

// The real 15 s defaults, on Playwright's fake clock (time jumps ahead; calls go to the real bridge).
async function runDefaultsOnFakeClock(browser, env) {
  const outcome = { h: null, error: null };
  try {
    const h = await openHarness(browser, env, { bridge: env.dev.base, timings: null, clock: true });
    outcome.h = h;
    const timings = await h.page.evaluate(() => window.kommoHost.widget.timings());
    const defaults = await h.page.evaluate(() => window.kommoHost.CustomWidget.DEFAULT_TIMINGS);
    assert(timings.heartbeatMs === 15000 && timings.presenceMs === 15000, `timings ${JSON.stringify(timings)}`);
    assert(JSON.stringify(defaults) === JSON.stringify(timings), 'the instance does not use DEFAULT_TIMINGS');
    const X = conv('x');
    await h.open(X, 'Xavier Client');
    const counts = async () => [await h.count({ conv: X, ...VIEWING, ok: true }), await h.count({ conv: X, ...PRESENCE, ok: true })];
    await waitFor('the first viewing and GET', async () => String(await counts()) === '1,1', 3000);
    await h.page.clock.runFor(12000);
    await sleep(400);
    assert(String(await counts()) === '1,1', `12 s in: ${await counts()} (viewing, GET)`);
    await h.page.clock.runFor(4000);
    await waitFor('the second viewing and GET, 15 s in', async () => String(await counts()) === '2,2', 3000);
    await h.page.clock.runFor(15000);
    await waitFor('the third viewing and GET, 30 s in', async () => String(await counts()) === '3,3', 3000);
    await sleep(300);
    assert(String(await counts()) === '3,3', `after 31 s: ${await counts()}`);
    assert(await h.count({ conv: X, ...READ }) === 1, 'not one read for the opening');
    await h.close();
    await waitFor('left X', async () => await h.count({ conv: X, ...LEFT, ok: true }) === 1, 3000);
  } catch (error) {
    outcome.error = error;
  }
  return outcome;
}

// A failing bridge: the widget must stay quiet and keep the page usable, backing off.
async function runFailure(browser, env, name, base, token, F) {
  const outcome = { name, error: null };
  try {
    const h = await openHarness(browser, env, { bridge: base, token });
    await h.open(F, 'Fay Client', [{ msgid: 'f-1', text: 'Hi' }]);
    await sleep(4300);
    const viewing = await h.find({ conv: F, ...VIEWING });
    assert(viewing.length >= 4, `only ${viewing.length} heartbeat attempts in 4.3 s`);
    assert(viewing.every((c) => c.end === null || c.status !== 200), `attempts: ${JSON.stringify(viewing)}`);
    const waits = waitsOf(viewing.filter((c) => c.end));
    // The n-th retry waits backoffBaseMs * 2^(n-1), ±20 % jitter; delays only lengthen a wait.
    waits.forEach((wait, i) => {
      const base = Math.min(FAST.backoffMaxMs, FAST.backoffBaseMs * 2 ** i);
      assert(wait >= 0.8 * base - 5 && wait <= 1.2 * base + 500, `heartbeat retries do not back off: waits ${waits} ms`);
    });
    const getGaps = gapsOf(await h.find({ conv: F, ...PRESENCE }));
    assert(getGaps.every((g) => g >= 0.9 * FAST.presenceMs), `presence GETs closer than presenceMs: ${getGaps}`);
    assert(await h.count({ conv: F, ...READ }) <= 5, `${await h.count({ conv: F, ...READ })} read attempts (at most readAttempts)`);
    await h.page.click('#host-button');
    assert(await h.page.evaluate(() => window.kommoHost.clicks()) === 1, 'the host page does not react any more');
    assert(await h.page.evaluate(() => document.querySelectorAll('.kfc-presence').length) === 0, 'a mark is shown with no answer');
    assert(h.pageErrors.length === 0, `page errors: ${h.pageErrors}`);
    assert(h.dialogs.length === 0, `dialogs: ${h.dialogs}`);
    const captured = await h.captured();
    assert(captured.errors.length === 0 && captured.rejections.length === 0, `captured by the page: ${JSON.stringify(captured)}`);
    // The browser's own network lines ("Failed to load resource …") are not the widget's.
    const scriptErrors = h.consoleErrors.filter((t) => !/Failed to load resource|net::ERR_/.test(t));
    assert(scriptErrors.length === 0, `console errors: ${scriptErrors}`);
    const diagnostics = await h.page.evaluate(() => window.kommoHost.widget.diagnostics());
    assert(diagnostics.every((d) => d.what !== 'error'), `the widget caught its own exceptions: ${JSON.stringify(diagnostics)}`);
    outcome.detail = `heartbeat retries waited ${waits.join(', ')} ms`;
    await h.context.close();
  } catch (error) {
    outcome.error = error;
  }
  return outcome;
}

main().catch((error) => {
  console.log(`FAIL the widget test could not run\n     ${error && error.stack ? error.stack : error}`);
  results.push({ name: 'setup', ok: false });
}).finally(() => {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
});
