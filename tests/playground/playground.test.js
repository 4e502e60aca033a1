// The dev server's playground (functions/dev-server/playground) in headless Chromium, against
// the real dev server in local mode (no configuration): a person's steps on both panes, and
// what each pane must show, within the times a person would notice. Reuses the widget test's
// harness (its node_modules and its way of starting the dev server). Prints "N passed,
// M failed" last; exits non-zero on failure.
//
//   node playground.test.js        (tests/playground/run installs what it needs and runs this)
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '../..');
const WIDGET = path.join(ROOT, 'tests/widget');
const { chromium } = require(path.join(WIDGET, 'node_modules/playwright-core'));
const servers = require(path.join(WIDGET, 'servers'));

const OUT = path.join(ROOT, 'target/playground');
const DEV_SERVER = path.join(ROOT, 'target/debug/dev-server');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** What a person would call "at once": typing and messages must show within this. */
const SHOWN_WITHIN_MS = 3000;

// ------------------------------------------------------------------ a tiny runner

const results = [];
async function check(name, fn) {
  const started = Date.now();
  try {
    const detail = await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - started} ms)${detail ? `: ${detail}` : ''}`);
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
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (value) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

// ------------------------------------------------------------------ the test

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  let dev = null;
  process.on('exit', () => dev && dev.child.kill());
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));
  // Local mode: nothing configured, so the sink stands in for both peers and the playground is on.
  dev = await servers.startDevServer(DEV_SERVER, {});
  assert(/playground.*http:\/\/127\.0\.0\.1:\d+\//.test(dev.log()), `the startup print names no playground:\n${dev.log()}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const pageErrors = [];
    const offline = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    // No CDN, nothing from the network: every request stays on the dev server.
    page.on('request', (r) => { if (!r.url().startsWith(dev.base)) offline.push(r.url()); });
    const byTestId = (name) => page.locator(`[data-testid="${name}"]`);
    const visible = (name) => () => byTestId(name).isVisible();
    const hidden = (name) => async () => !(await byTestId(name).isVisible());

    await check('the page opens at / and connects to the wire', async () => {
      const response = await page.goto(`${dev.base}/`);
      assert(response.status() === 200, `GET / answered ${response.status()}`);
      await waitFor('the page to be ready', () => page.evaluate(() => document.body.dataset.ready === 'true'), 5000);
      for (const name of ['client-composer', 'client-send', 'manager-composer', 'manager-send', 'client-pane',
        'manager-pane', 'client-presence']) {
        assert(await byTestId(name).count() === 1, `no single [data-testid=${name}]`);
      }
      // Every status change of the manager's messages, as it happens.
      await page.evaluate(() => {
        window.statusChanges = [];
        new MutationObserver((changes) => {
          for (const change of changes) {
            if (change.attributeName === 'data-status') window.statusChanges.push(change.target.dataset.status);
          }
        }).observe(document.querySelector('[data-testid="manager-pane"]'), { subtree: true, attributes: true, attributeFilter: ['data-status'] });
      });
    });

    await check("the manager's pane shows the client online", async () => {
      const ms = await waitFor('client-presence to say online',
        async () => (await byTestId('client-presence').textContent()).trim() === 'online', 5000);
      return `in ${ms} ms`;
    });

    await check("the client's message reaches the manager's pane", async () => {
      await byTestId('client-composer').fill('Hi! Is my order on its way?');
      await byTestId('client-send').click();
      const ms = await waitFor("the client's message in the manager's pane", () => byTestId('manager-pane')
        .locator('.message:not(.mine)', { hasText: 'Is my order on its way?' }).count(), SHOWN_WITHIN_MS);
      return `in ${ms} ms`;
    });

    await check("the client's typing shows in the manager's pane within 3 s and ends with the message", async () => {
      assert(await hidden('manager-sees-typing')(), 'typing shown before anyone typed');
      await byTestId('client-composer').pressSequentially('It was due', { delay: 40 });
      const ms = await waitFor('manager-sees-typing', visible('manager-sees-typing'), SHOWN_WITHIN_MS);
      await byTestId('client-composer').pressSequentially(' yesterday.', { delay: 40 });
      await byTestId('client-send').click();
      await waitFor('manager-sees-typing to go with the message', hidden('manager-sees-typing'), SHOWN_WITHIN_MS);
      return `shown in ${ms} ms`;
    });

    await check("the manager's typing shows in the client's pane within 3 s", async () => {
      assert(await hidden('client-sees-typing')(), 'typing shown before anyone typed');
      await byTestId('manager-composer').pressSequentially('Yes, it ships', { delay: 40 });
      const ms = await waitFor('client-sees-typing', visible('client-sees-typing'), SHOWN_WITHIN_MS);
      return `in ${ms} ms`;
    });

    await check("the manager's message reaches the client and ticks sent → delivered → read", async () => {
      await byTestId('manager-composer').pressSequentially(' today!', { delay: 20 });
      await byTestId('manager-send').click();
      const ms = await waitFor("the manager's message in the client's pane", () => byTestId('client-pane')
        .locator('.message:not(.mine)', { hasText: 'Yes, it ships today!' }).count(), SHOWN_WITHIN_MS);
      await waitFor('client-sees-typing to go with the message', hidden('client-sees-typing'), SHOWN_WITHIN_MS);
      const message = byTestId('manager-pane').locator('.message.mine', { hasText: 'Yes, it ships today!' });
      await waitFor('the read tick', async () => (await message.getAttribute('data-status')) === 'read', 5000);
      const changes = await page.evaluate(() => window.statusChanges);
      const delivered = changes.indexOf('delivered');
      assert(delivered >= 0 && delivered < changes.lastIndexOf('read'), `statuses went ${changes.join(' → ')}`);
      assert(!changes.includes('failed'), `a status failed: ${changes.join(' → ')}`);
      return `shown in ${ms} ms; statuses ${['sent', ...changes].join(' → ')}`;
    });

    await check("the client's reaction shows on the manager's message, and goes when taken back", async () => {
      const received = byTestId('client-pane').locator('.message:not(.mine)', { hasText: 'Yes, it ships today!' });
      const sent = byTestId('manager-pane').locator('.message.mine', { hasText: 'Yes, it ships today!' });
      await received.locator('[data-emoji="👍"]').click();
      const ms = await waitFor('the reaction in Kommo', async () => (await sent.getAttribute('data-reaction')) === '👍', SHOWN_WITHIN_MS);
      await received.locator('[data-emoji="👍"]').click();
      await waitFor('the reaction taken back', async () => (await sent.getAttribute('data-reaction')) === null, SHOWN_WITHIN_MS);
      await received.locator('[data-emoji="❤️"]').click();
      await waitFor('another reaction', async () => (await sent.getAttribute('data-reaction')) === '❤️', SHOWN_WITHIN_MS);
      return `shown in ${ms} ms`;
    });

    await check("the client's messages are read once the manager has the conversation open", async () => {
      const mine = byTestId('client-pane').locator('.message.mine');
      assert(await mine.count() === 2, `${await mine.count()} client messages`);
      await waitFor('both read', async () => (await mine.evaluateAll((items) => items.every((i) => i.dataset.status === 'read'))), 5000);
    });

    await check("the client's edit replaces the message in the manager's pane", async () => {
      const own = byTestId('client-pane').locator('.message.mine', { hasText: 'It was due yesterday.' });
      await own.locator('[data-action="edit"]').click();
      assert(await byTestId('client-composer').inputValue() === 'It was due yesterday.', 'the composer does not hold the text');
      await byTestId('client-composer').fill('It was due on Monday.');
      await byTestId('client-send').click();
      const seen = byTestId('manager-pane').locator('.message:not(.mine)', { hasText: 'It was due on Monday.' });
      const ms = await waitFor('the edit in Kommo', () => seen.count(), SHOWN_WITHIN_MS);
      assert(await seen.getAttribute('data-edited') === 'true', 'not marked edited');
      assert(await byTestId('manager-pane').getByText('It was due yesterday.').count() === 0, 'the old text is still shown');
      assert(await byTestId('client-pane').locator('.message.mine').count() === 2, 'the edit was sent as a new message');
      return `in ${ms} ms`;
    });

    await check('replies quote the message they answer, both ways', async () => {
      const asked = byTestId('manager-pane').locator('.message:not(.mine)', { hasText: 'Is my order on its way?' });
      await asked.locator('[data-action="reply"]').click();
      await byTestId('manager-composer').fill('Tracking number follows');
      await byTestId('manager-send').click();
      const quotedAtClient = byTestId('client-pane').locator('.message:not(.mine)', { hasText: 'Tracking number follows' });
      const toClient = await waitFor("the manager's reply at the client", () => quotedAtClient.count(), SHOWN_WITHIN_MS);
      const clientQuote = await quotedAtClient.locator('.quote').textContent();
      assert(clientQuote === 'Hi! Is my order on its way?', `the client's pane quotes ${JSON.stringify(clientQuote)}`);

      const answered = byTestId('client-pane').locator('.message:not(.mine)', { hasText: 'Yes, it ships today!' });
      await answered.locator('[data-action="reply"]').click();
      await byTestId('client-composer').fill('Great, thanks');
      await byTestId('client-send').click();
      const quotedInKommo = byTestId('manager-pane').locator('.message:not(.mine)', { hasText: 'Great, thanks' });
      const toManager = await waitFor("the client's reply in Kommo", () => quotedInKommo.count(), SHOWN_WITHIN_MS);
      const managerQuote = await quotedInKommo.locator('.quote').textContent();
      assert(managerQuote === 'Yes, it ships today!', `the manager's pane quotes ${JSON.stringify(managerQuote)}`);
      return `to the client in ${toClient} ms, to the manager in ${toManager} ms`;
    });

    await check("the client's pane shows the manager online", async () => {
      await waitFor('manager-presence to say online',
        async () => (await byTestId('manager-presence').textContent()).trim() === 'online', 3000);
    });

    await check("the manager's typing ends on its own when the manager stops", async () => {
      await byTestId('manager-composer').pressSequentially('One more', { delay: 30 });
      await waitFor('client-sees-typing', visible('client-sees-typing'), SHOWN_WITHIN_MS);
      // Kommo's webhook vouches for 5 s; with no more keystrokes the bridge sends typing.stopped.
      const ms = await waitFor('client-sees-typing to end', hidden('client-sees-typing'), 9000);
      await byTestId('manager-composer').fill('');
      return `ended ${ms} ms after the last typing`;
    });

    await check("a messenger refusing with 905 turns the manager's message failed", async () => {
      await byTestId('client-delivery').selectOption('905');
      await byTestId('manager-composer').fill('This one will be refused');
      await byTestId('manager-send').click();
      const message = byTestId('manager-pane').locator('.message.mine', { hasText: 'This one will be refused' });
      const ms = await waitFor('the failed mark', async () => (await message.getAttribute('data-status')) === 'failed', SHOWN_WITHIN_MS);
      assert(/905/.test(await message.getAttribute('title')), `no error code on the failed message: ${await message.getAttribute('title')}`);
      await byTestId('client-delivery').selectOption('');
      return `in ${ms} ms`;
    });

    await check('a chat service down holds the message at sent; back up, the retry delivers it', async () => {
      const setDown = async (down) => {
        await (down ? byTestId('chat-service-down').check() : byTestId('chat-service-down').uncheck());
        await waitFor('the control applied', async () => (await byTestId('chat-service-down').evaluate(
          (box) => box.closest('label').dataset.applied)) === String(down), 2000);
      };
      await setDown(true);
      try {
        await byTestId('manager-composer').fill('Are you there?');
        await byTestId('manager-send').click();
        const message = byTestId('manager-pane').locator('.message.mine', { hasText: 'Are you there?' });
        await waitFor('a refused attempt on the wire', async () => (await page.locator('#wire li .line')
          .filter({ hasText: 'answered 503: down on cue' }).count()) > 0, SHOWN_WITHIN_MS);
        await sleep(1500);
        assert(await message.getAttribute('data-status') === 'sent', `status ${await message.getAttribute('data-status')} while the chat service is down`);
        await setDown(false);
        const ms = await waitFor('delivery after recovery', async () => ['delivered', 'read'].includes(await message.getAttribute('data-status')), 10000);
        return `delivered ${ms} ms after the chat service came back`;
      } finally {
        await setDown(false);
      }
    });

    await check('a slow chat service makes the bridge time out and retry; prompt again, the message is delivered once', async () => {
      const setSlow = async (slow) => {
        await (slow ? byTestId('chat-service-slow').check() : byTestId('chat-service-slow').uncheck());
        await waitFor('the control applied', async () => (await byTestId('chat-service-slow').evaluate(
          (box) => box.closest('label').dataset.applied)) === String(slow), 2000);
      };
      const text = 'Still there?';
      // The wire's records of the bridge sending this message to the chat service, slowed or not.
      const attempts = (slowed) => page.evaluate(([words, slowed]) => [...document.querySelectorAll('#wire li')]
        .filter((li) => li.textContent.includes('bridge → chat service') && li.textContent.includes(words)
          && li.textContent.includes('slowed: answered after') === slowed).length, [text, slowed]);
      const slowedAttempts = () => attempts(true);
      await setSlow(true);
      try {
        // Written without input events, so no typing.started goes first: the bridge keeps a
        // conversation's events in order, and a slowed typing event would hold the message back.
        await byTestId('manager-composer').evaluate((composer, words) => { composer.value = words; }, text);
        await byTestId('manager-send').click();
        const message = byTestId('manager-pane').locator('.message.mine', { hasText: text });
        await waitFor('a slowed attempt on the wire', async () => (await slowedAttempts()) >= 1, SHOWN_WITHIN_MS);
        // The bridge gives an attempt up after its 8 s timeout, then tries again after a backoff.
        const retriedAfter = await waitFor('the retry after the timeout', async () => (await slowedAttempts()) >= 2, 8000 + 1000 + SHOWN_WITHIN_MS, 100);
        await setSlow(false);
        // The attempt under way when the switch went off still times out; the next one is answered.
        const ms = await waitFor('a prompt attempt', async () => (await attempts(false)) >= 1, 8000 + 1000 + SHOWN_WITHIN_MS, 100);
        await waitFor('the message delivered', async () => ['delivered', 'read'].includes(await message.getAttribute('data-status')), SHOWN_WITHIN_MS);
        await sleep(1000);
        assert(await attempts(false) === 1, `${await attempts(false)} prompt attempts: the bridge kept retrying after success`);
        const copies = await byTestId('client-pane').locator('.message', { hasText: text }).count();
        assert(copies === 1, `the client sees ${copies} copies`);
        return `retried ${retriedAfter} ms after the first slowed attempt; answered ${ms} ms after the switch was off`;
      } finally {
        await setSlow(false);
      }
    });

    await check('a hidden tab shows both sides last seen, and online again when shown', async () => {
      const setVisibility = (state) => page.evaluate((value) => {
        Object.defineProperty(document, 'visibilityState', { value, configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      }, state);
      const says = (name, pattern) => async () => pattern.test((await byTestId(name).textContent()).trim());
      await setVisibility('hidden');
      // presence.offline closes the client's window at once; the manager's `left` is pushed
      // after PRESENCE_GRACE_S (5 s by default) without `viewing`.
      const client = await waitFor('the client last seen', says('client-presence', /^last seen \S/), 4000);
      const manager = await waitFor('the manager last seen', says('manager-presence', /^last seen \S/), 9000);
      await setVisibility('visible');
      await waitFor('the client online again', says('client-presence', /^online$/), 4000);
      await waitFor('the manager online again', says('manager-presence', /^online$/), 4000);
      return `client in ${client} ms, manager in ${manager} ms`;
    });

    await check('the wire shows every call, each signature checked, and the page stayed offline', async () => {
      const wire = page.locator('#wire');
      const lines = await wire.locator('li .line').allTextContents();
      const fromBridge = lines.filter((l) => l.includes('bridge → '));
      assert(fromBridge.length >= 6, `only ${fromBridge.length} calls from the bridge on the wire`);
      assert(fromBridge.every((l) => l.includes('signature checked')), `a call was not signed right:\n${fromBridge.join('\n')}`);
      for (const expected of ['typing.started', 'message.created', 'new_message', 'delivery_status read',
        'delivery_status failed 905', 'presence.changed']) {
        assert(lines.some((l) => l.includes(expected)), `no ${expected} on the wire`);
      }
      const fromPage = lines.filter((l) => /kommo → bridge|chat service → bridge/.test(l));
      assert(fromPage.length >= 4 && fromPage.every((l) => l.includes('answered 200')), `the page's calls:\n${fromPage.join('\n')}`);
      assert(offline.length === 0, `requests left the dev server: ${offline}`);
      assert(pageErrors.length === 0, `page errors: ${pageErrors}`);
    });

    await page.screenshot({ path: path.join(OUT, 'playground.png'), fullPage: true });
    await context.close();
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.log(`FAIL the playground test could not run\n     ${error && error.stack ? error.stack : error}`);
  results.push({ name: 'setup', ok: false });
}).finally(() => {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
});
