// Browser figures for Viam's TypeScript SDK against a Tether machine, in headless Chromium
// (Debian's, via playwright-core): connect time direct (gRPC-web over HTTP/1.1) and over
// WebRTC (the machine as its own signaling server), and a unary round trip from the page over
// each. The page is served from another origin than the machine, as a web app is.
//
//   node browser_bench.mjs <host:port> <machine name> [DIALS] [CALLS]
//
// Prints one line per figure. Run by scripts/bench-browser.
import { chromium } from 'playwright-core';
import { CHROMIUM, directHost, servePage } from './shared.mjs';

const [address, name, dials = '20', calls = '200'] = process.argv.slice(2);
const direct = directHost(address);
const page = `<!doctype html><html><head><meta charset="utf-8"><script src="/sdk.js"></script></head><body></body></html>`;

const { server, origin } = await servePage(page);
const browser = await chromium.launch(CHROMIUM);
try {
  const tab = await browser.newPage();
  await tab.goto(`${origin}/`);
  const confs = {
    'gRPC-web': { host: direct, noReconnect: true, disableSessions: true },
    WebRTC: { host: name, signalingAddress: direct, iceServers: [], noReconnect: true, disableSessions: true },
  };
  const pct = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
  };
  for (const [transport, conf] of Object.entries(confs)) {
    // Measured inside the page: from dial() to the first answered call.
    const [connects, trips] = await tab.evaluate(async ([conf, dials, calls]) => {
      const connects = [];
      let robot;
      for (let i = 0; i < dials; i++) {
        const t0 = performance.now();
        robot = new sdk.RobotClient();
        await robot.dial(conf);
        await robot.resourceNames();
        connects.push(performance.now() - t0);
        if (i < dials - 1) await robot.disconnect();
      }
      const trips = [];
      for (let i = 0; i < calls; i++) {
        const t0 = performance.now();
        await robot.resourceNames();
        trips.push(performance.now() - t0);
      }
      await robot.disconnect();
      return [connects, trips];
    }, [conf, Number(dials), Number(calls)]);
    console.log(`browser ${transport}: connect (dial to first answer) p50 ${pct(connects, 50).toFixed(1)} ms, p90 ${pct(connects, 90).toFixed(1)} ms (${connects.length} dials)`);
    console.log(`browser ${transport}: unary round trip (ResourceNames) p50 ${pct(trips, 50).toFixed(2)} ms, p90 ${pct(trips, 90).toFixed(2)} ms (${trips.length} calls)`);
  }
} finally {
  await browser.close();
  server.close();
}
