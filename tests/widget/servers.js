// The servers the widget test runs on 127.0.0.1: the harness's static server (Kommo's side,
// which also issues the one-time tokens), a recording chat service, a bridge stand-in that
// answers 500, and the real dev server. Plus the signing both sides need.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

const b64url = (data) => Buffer.from(data).toString('base64url');

/** A Kommo one-time token: a JWT signed HS256 with the integration secret. */
function oneTimeToken(secret, { accountId = 1, userId = 42, lifetimeS = 120, issuer = 'http://harness.kommo.local' } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({
    iss: issuer, aud: 'bridge', jti: crypto.randomUUID(), iat: now, nbf: now, exp: now + lifetimeS,
    account_id: accountId, user_id: userId, client_uuid: 'harness', subdomain: 'harness',
  }));
  const signature = crypto.createHmac('sha256', secret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/** Standard Webhooks headers for `body` with a `whsec_…` secret. */
function webhookHeaders(secret, body, id = `msg_${crypto.randomBytes(9).toString('hex')}`) {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const signature = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` };
}

function verifyWebhook(secret, headers, body) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const mac = crypto.createHmac('sha256', key)
    .update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64');
  return String(headers['webhook-signature'] || '').split(' ').includes(`v1,${mac}`);
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png' };

/**
 * The harness's origin: /harness/* (tests/widget/harness), /widget/* (the widget package),
 * /vendor/require.js and /vendor/jquery.js (from node_modules), and /__kommo/token, which
 * plays Kommo's side of $authorizedAjax (mode=bad signs with another key).
 */
async function startStaticServer({ root, integrationSecret }) {
  const here = __dirname;
  const mounts = [
    ['/harness/', path.join(here, 'harness')],
    ['/widget/', path.join(root, 'widget')],
  ];
  const vendor = {
    '/vendor/require.js': path.join(here, 'node_modules/requirejs/require.js'),
    '/vendor/jquery.js': path.join(here, 'node_modules/jquery/dist/jquery.js'),
  };
  const tokens = { issued: 0 };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/__kommo/token') {
      tokens.issued += 1;
      const secret = url.searchParams.get('mode') === 'bad' ? 'not-the-integration-secret' : integrationSecret;
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      // Kommo's tokens name the account's address as their issuer: here, the page's own origin.
      res.end(JSON.stringify({ token: oneTimeToken(secret, { issuer: `http://${req.headers.host}` }) }));
      return;
    }
    let file = vendor[url.pathname];
    for (const [prefix, dir] of mounts) {
      if (!file && url.pathname.startsWith(prefix)) {
        const candidate = path.normalize(path.join(dir, decodeURIComponent(url.pathname.slice(prefix.length))));
        if (candidate.startsWith(dir + path.sep)) file = candidate;
      }
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  const base = await listen(server);
  return { base, server, tokens };
}

/** The chat service: records every event the bridge posts, with its signature checked. */
async function startRecorder({ chatSecret }) {
  const events = [];
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    let event = null;
    try { event = JSON.parse(body); } catch { event = null; }
    events.push({ at: Date.now(), path: req.url, signed: verifyWebhook(chatSecret, req.headers, body), event });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
  const base = await listen(server);
  return { base, server, events };
}

/** A bridge stand-in that answers every widget call 500 (with CORS, as the bridge does). */
async function startFailingBridge() {
  const server = http.createServer(async (req, res) => {
    await readBody(req);
    const cors = {
      'access-control-allow-origin': req.headers.origin || '*',
      'access-control-allow-methods': 'GET, POST, OPTIONS',
      'access-control-allow-headers': 'X-Auth-Token, Content-Type',
      'access-control-max-age': '600',
      vary: 'Origin',
    };
    if (req.method === 'OPTIONS') {
      res.writeHead(204, cors);
      res.end();
      return;
    }
    res.writeHead(500, { ...cors, 'content-type': 'application/json' });
    res.end('{"error":{"code":"internal","message":"the bridge failed; the request may be retried"}}');
  });
  const base = await listen(server);
  return { base, server };
}

/** A loopback port nothing listens on. */
async function closedPort() {
  const server = http.createServer();
  const base = await listen(server);
  await new Promise((resolve) => server.close(resolve));
  return base;
}

/** The real dev server on a free port with exactly `env` (plus PATH); resolves its base URL. */
function startDevServer(binary, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], {
      env: { PATH: process.env.PATH, PORT: '0', RUST_LOG: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`the dev server did not say where it listens within 20 s\n${stdout}${stderr}`));
    }, 20000);
    child.stderr.on('data', (d) => { stderr += d; });
    child.stdout.on('data', (d) => {
      stdout += d;
      const match = /dev-server: listening on (\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve({ base: match[1], child, log: () => stdout + stderr });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the dev server exited (${code})\n${stdout}${stderr}`));
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

module.exports = {
  oneTimeToken, webhookHeaders, startStaticServer, startRecorder, startFailingBridge, closedPort, startDevServer,
};
