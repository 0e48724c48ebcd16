// What the SDK drivers share: the machine's address as the SDK dials it directly, Debian's
// Chromium as the browser tests and benchmark launch it, and a page origin of their own that
// serves the SDK's self-contained UMD build.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);

// The machine at `address` (127.0.0.1:PORT) as the SDK dials it directly: it refuses hosts
// whose name lacks "local".
export const directHost = (address) => `http://${address.replace('127.0.0.1', 'localhost')}`;

// Headless, as root, in a closed network (no sandbox, nothing fetched in the background);
// for WebRTC on loopback: host candidates on loopback, and not hidden behind mDNS names.
export const CHROMIUM = {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
};

// Serves `page` at / and the SDK at /sdk.js on a loopback port of its own (another origin
// than the machine's, as a web app's); the server and its origin.
export async function servePage(page) {
  const sdk = fs.readFileSync(path.join(here, 'node_modules/@viamrobotics/sdk/dist/main.umd.js'));
  const server = http.createServer((req, res) => {
    const js = req.url === '/sdk.js';
    res.writeHead(200, { 'content-type': js ? 'text/javascript' : 'text/html' });
    res.end(js ? sdk : page);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}
