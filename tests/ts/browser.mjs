// Viam's TypeScript SDK in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), as a web app uses it: the page is served from its own origin (a static
// server on another loopback port) and loads the SDK's self-contained UMD build, so every
// call to the machine is cross-origin (CORS) gRPC-web over HTTP/1.1. Driven by
// crates/cli/tests/typescript.rs; prints JSON lines (the page's own, and {"browser_pid": N}
// so the test can kill the browser as a crash would).
//
//   node browser.mjs <scenario> <host:port>
//
// Scenarios as node_client.mjs: list, session (start a session and command motor "left",
// then wait), nosession.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [scenario, address] = process.argv.slice(2);
// TETHER_TS_WEBRTC=<machine name>: dial over WebRTC, the machine its own signaling server.
const webrtcHost = process.env.TETHER_TS_WEBRTC;
const direct = `http://${address.replace('127.0.0.1', 'localhost')}`;
const dialConf = webrtcHost
  ? { host: webrtcHost, signalingAddress: direct, iceServers: [], noReconnect: true }
  : { host: direct, noReconnect: true };
const say = (what) => console.log(JSON.stringify(what));
const here = path.dirname(new URL(import.meta.url).pathname);
const sdk = fs.readFileSync(path.join(here, 'node_modules/@viamrobotics/sdk/dist/main.umd.js'));

const page = `<!doctype html><html><head><meta charset="utf-8"><title>Tether page</title>
<script src="/sdk.js"></script></head><body><pre id="out"></pre><script>
const say = (what) => console.log(JSON.stringify(what));
(async () => {
  try {
    const robot = new sdk.RobotClient();
    robot.on('connectionstatechange', (e) => say({ event: e.eventType }));
    await robot.dial(${JSON.stringify(dialConf)});
    const names = await robot.resourceNames();
    say({ resources: names.map((n) => n.namespace + ':' + n.type + ':' + n.subtype + '/' + n.name) });
    if ('${scenario}' === 'list') { say({ done: true }); return; }
    let session = null;
    if ('${scenario}' === 'session') {
      await robot['sessionManager'].getSessionMetadata();
      session = robot['sessionManager'].sessionID;
    }
    await new sdk.MotorClient(robot, 'left').setPower(0.5);
    say({ commanded: 'left', session });
  } catch (e) {
    // "Failed to connect via all methods" carries each method's error as its cause.
    const causes = (err) => {
      const c = err && err.cause;
      if (!c) return [];
      return (Array.isArray(c) ? c : [c]).flatMap((x) => [String(x && x.message || x), ...causes(x)]);
    };
    say({ error: String(e && e.message || e), causes: causes(e) });
  }
})();
</script></body></html>`;

// The page's own origin: another port than the machine's.
const server = http.createServer((req, res) => {
  if (req.url === '/sdk.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(sdk);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;

const launched = await chromium.launchServer({
  executablePath: '/usr/bin/chromium',
  headless: true,
  // As root, in a closed network: no sandbox, nothing fetched in the background.
  // WebRTC on loopback: host candidates on loopback, and not hidden behind mDNS names.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
});
say({ browser_pid: launched.process().pid });
const browser = await chromium.connect(launched.wsEndpoint());
const tab = await browser.newPage();
tab.on('console', (m) => {
  const text = m.text();
  if (text.startsWith('{')) console.log(text);
});
tab.on('pageerror', (e) => say({ error: `page error: ${e.message}` }));
await tab.goto(`${origin}/`);
say({ page: origin });
// Hold on until killed (or the page says it is done).
setInterval(() => {}, 1 << 30);
