// Viam's TypeScript SDK (from npm, pinned in package-lock.json) as a Node app would use it:
// the connect-node transport (native gRPC over HTTP/2, h2c for http://), as Viam's own Node
// examples and e2e tests set it. Driven by crates/cli/tests/typescript.rs, which starts the
// machine, reads the JSON lines this prints, and kills this process to play a crashed app.
//
//   node node_client.mjs <scenario> <host:port> [key-id key]
//
// Scenarios: list (connect, print resource names, exit), session (start a session as Viam's
// session e2e harness does, command motor "left", wait), nosession (command without a
// session, wait), nosessions (disableSessions: true, command, wait), reconnect (the SDK's own
// reconnection on: print its connection events and the outcome of a call every 200 ms).
import dns from 'node:dns';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { directHost } from './shared.mjs';

// The machine listens on 127.0.0.1; Node 20 may resolve localhost to ::1 first.
dns.setDefaultResultOrder('ipv4first');
globalThis.VIAM = {
  GRPC_TRANSPORT_FACTORY: (opts) => createGrpcTransport({ httpVersion: '2', ...opts }),
};
const VIAM = await import('@viamrobotics/sdk');

const [scenario, address, keyId, key] = process.argv.slice(2);
const say = (what) => console.log(JSON.stringify(what));
// TETHER_TS_WEBRTC=<machine name>: dial over WebRTC, with the machine as its own signaling
// server at `address`, through node-datachannel's WebRTC for Node (as Viam's Node example).
const webrtcHost = process.env.TETHER_TS_WEBRTC;
if (webrtcHost) {
  const polyfill = await import('node-datachannel/polyfill');
  for (const name of ['RTCPeerConnection', 'RTCSessionDescription', 'RTCIceCandidate']) {
    globalThis[name] = polyfill[name];
  }
}

const conf = {
  host: webrtcHost ?? directHost(address),
  ...(webrtcHost ? { signalingAddress: `http://${address}`, iceServers: [] } : {}),
  noReconnect: scenario !== 'reconnect',
  reconnectMaxAttempts: 20,
  reconnectMaxWait: 1000,
  disableSessions: scenario === 'nosessions',
};
if (keyId) {
  conf.credentials = { type: 'api-key', authEntity: keyId, payload: key };
}

try {
  const robot = new VIAM.RobotClient();
  robot.on('connectionstatechange', (e) => say({ event: e.eventType }));
  // createRobotClient(DialDirectConf) throws after connecting (isConnected() looks at ICE
  // only); Viam's own Node tests call dial() for direct connections.
  await robot.dial(conf);
  const names = await robot.resourceNames();
  say({ resources: names.map((n) => `${n.namespace}:${n.type}:${n.subtype}/${n.name}`) });
  if (scenario === 'reconnect') {
    setInterval(async () => {
      try {
        await robot.resourceNames();
        say({ call: 'ok' });
      } catch (e) {
        say({ call: String(e?.message ?? e) });
      }
    }, 200);
  } else if (scenario === 'list') {
    await robot.disconnect();
    process.exit(0);
  }
  let session = null;
  if (scenario === 'session') {
    // 0.61.1 starts no session by itself (../shared/CLIENTS.md §2.3): as Viam's e2e harness.
    await robot['sessionManager'].getSessionMetadata();
    session = robot['sessionManager'].sessionID;
  }
  if (scenario === 'reconnect') {
    await new Promise(() => {});
  }
  const motor = new VIAM.MotorClient(robot, 'left');
  await motor.setPower(0.5);
  say({ commanded: 'left', session });
  // Hold on until killed.
  setInterval(() => {}, 1 << 30);
} catch (e) {
  // "Failed to connect via all methods" carries each method's error as its cause.
  const causes = (err) => {
    const c = err?.cause;
    if (!c) return [];
    return (Array.isArray(c) ? c : [c]).flatMap((x) => [String(x?.message ?? x), ...causes(x)]);
  };
  say({ error: String(e?.message ?? e), code: e?.code ?? null, causes: causes(e) });
  process.exit(1);
}
