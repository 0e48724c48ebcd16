// The machine's own page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), as a user opens it: http://<machine>/ in a tab. Driven by
// crates/cli/tests/page.rs over stdin/stdout, one JSON object a line each way:
//
//   node machine_page.mjs <host:port>
//
//   {"op": "state"}                      → what the page shows now, read from its DOM
//   {"op": "login", "id": K, "key": S}   → fills in the sign-in form and submits it
//   {"op": "stop_all"}                   → clicks "Stop all"
//   {"op": "screenshot", "path": P}      → writes a full-page PNG to P
import readline from 'node:readline';
import { chromium } from 'playwright-core';
import { CHROMIUM } from './shared.mjs';

const [address] = process.argv.slice(2);
const say = (what) => console.log(JSON.stringify(what));

const browser = await chromium.launch(CHROMIUM);
const tab = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
tab.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
tab.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
const response = await tab.goto(`http://${address}/`);
say({
  loaded: response.status(),
  content_type: response.headers()['content-type'],
  csp: response.headers()['content-security-policy'] || null,
});

// Everything the page shows, from its DOM.
const state = () => tab.evaluate(() => {
  const rows = (table) => [...document.querySelectorAll(`#${table} tbody tr`)].map((tr) => ({
    id: tr.dataset.sessionId || tr.dataset.resource || null,
    moving: tr.dataset.moving || null,
    cells: [...tr.cells].map((c) => c.textContent),
  }));
  const connections = {};
  for (const s of document.querySelectorAll('#connections [data-transport]')) {
    connections[s.dataset.transport] = Number(s.dataset.open);
  }
  return {
    live: document.body.dataset.live || null,
    badge: document.getElementById('live').textContent,
    login_visible: !document.getElementById('login').hidden,
    machine: document.getElementById('machine-name').textContent,
    facts: document.getElementById('machine-facts').textContent,
    sessions: rows('sessions'),
    commanders: rows('commanders'),
    resources: rows('resources'),
    expiries: rows('expiries'),
    connections,
    stop_all_result: document.getElementById('stop-all-result').textContent,
    login_result: document.getElementById('login-result').textContent,
  };
});

const ops = {
  state: async () => ({ state: await state(), errors }),
  login: async ({ id, key }) => {
    await tab.fill('#key-id', id);
    await tab.fill('#key', key);
    await tab.click('#sign-in');
    return { login: 'submitted' };
  },
  stop_all: async () => {
    await tab.click('#stop-all');
    return { stop_all: 'clicked' };
  },
  screenshot: async ({ path }) => {
    await tab.screenshot({ path, fullPage: true });
    return { screenshot: path };
  },
};

const input = readline.createInterface({ input: process.stdin });
for await (const line of input) {
  let command;
  try {
    command = JSON.parse(line);
    const op = ops[command.op];
    if (!op) throw new Error(`no such op: ${command.op}`);
    say({ op: command.op, ...(await op(command)) });
  } catch (e) {
    say({ op: command && command.op, error: String(e && e.message || e) });
  }
}
await browser.close();
