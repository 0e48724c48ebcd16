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
// then wait), nosession, reconnect (the SDK's own reconnection on: print its connection
// events and the outcome of a call every 200 ms).
import { chromium } from 'playwright-core';
import { CHROMIUM, directHost, servePage } from './shared.mjs';

const [scenario, address] = process.argv.slice(2);
// TETHER_TS_WEBRTC=<machine name>: dial over WebRTC, the machine its own signaling server.
const webrtcHost = process.env.TETHER_TS_WEBRTC;
const direct = directHost(address);
// The SDK's own reconnection only in the reconnect scenario (as node_client.mjs).
const reconnect = scenario === 'reconnect'
  ? { noReconnect: false, reconnectMaxAttempts: 20, reconnectMaxWait: 1000 }
  : { noReconnect: true };
// TETHER_TS_CREDENTIALS=<key id>:<key>: dial with API-key credentials.
const credentials = process.env.TETHER_TS_CREDENTIALS
  ? (([authEntity, payload]) => ({ credentials: { type: 'api-key', authEntity, payload } }))(
    process.env.TETHER_TS_CREDENTIALS.split(':'))
  : {};
const dialConf = webrtcHost
  ? { host: webrtcHost, signalingAddress: direct, iceServers: [], ...reconnect, ...credentials }
  : { host: direct, ...reconnect, ...credentials };
const say = (what) => console.log(JSON.stringify(what));

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
    if ('${scenario}' === 'reconnect') {
      setInterval(async () => {
        try {
          await robot.resourceNames();
          say({ call: 'ok' });
        } catch (e) {
          say({ call: String(e && e.message || e) });
        }
      }, 200);
      return;
    }
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
const { origin } = await servePage(page);
const launched = await chromium.launchServer(CHROMIUM);
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
