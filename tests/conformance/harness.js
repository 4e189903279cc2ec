// Starts the real edge-gateway binary on free loopback ports with a temp data dir, and gives
// tests real socket.io clients (v4 and v2) and a real MQTT publisher (mosquitto_pub).
'use strict';

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const crypto = require('node:crypto');

const ioV4 = require('socket.io-client');
const ioV2 = require('socket.io-client-v2');

// Every client socket and gateway the tests open, so what a failing test left open is closed
// after it: a leaked handle would otherwise keep the file alive until the runner's file timeout
// and hide the real failure.
const openSockets = new Set();
const gateways = new Set();

/** Closes every client socket still open (run after each test). */
function closeClients() {
  for (const s of openSockets) s.close();
  openSockets.clear();
}

/** Stops every gateway still running (run after each file). */
async function stopGateways() {
  await Promise.all([...gateways].map((g) => g.stop()));
}

/** A socket.io client (v4 or v2) that `closeClients()` will close. */
function client(version, url, opts) {
  const socket = (version === 2 ? ioV2 : ioV4)(url, opts);
  openSockets.add(socket);
  socket.on('disconnect', () => openSockets.delete(socket));
  return socket;
}

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.EDGE_GATEWAY_BIN || path.join(ROOT, 'target', 'debug', 'edge-gateway');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function httpGet(port, p, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, headers }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts a gateway; `env` overrides, `dataDir` reuses a store. With
 * EDGE_GATEWAY_CONFORMANCE_RELAY=1 the clients talk to a relay instead: redis-server, the
 * gateway writing streams to it, and `edge-gateway relay` reading them (see startRelayed).
 */
async function startGateway(env = {}, opts = {}) {
  if (process.env.EDGE_GATEWAY_CONFORMANCE_RELAY) return startRelayed(env, opts);
  return startProcess('run', env, opts);
}

/** Starts redis-server on a free port; resolves with {port, stop}. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error('redis-server did not start');
    await sleep(50);
  }
  return { port, stop: async () => { child.kill('SIGKILL'); await exited; } };
}

/**
 * Relay mode: resolves once the relay took every record the gateway committed (its Redis sink
 * has nothing left to send, and the relay saw that `seq`), plus its own commit. At the edge:
 * at once.
 */
async function settled(gw) {
  if (!gw.edge) return;
  const health = async (port) => JSON.parse((await httpGet(port, '/health')).body);
  const end = Date.now() + 30000;
  for (;;) {
    const edge = await health(gw.edge.httpPort);
    const sink = edge.components.sinks.redis;
    const relay = await health(gw.httpPort);
    const seen = relay.relay.gateways[edge.gatewayId];
    if (sink && sink.lagRecords === 0 && seen && seen.lastSeq >= sink.cursor - 1) break;
    if (Date.now() > end) throw new Error('timed out: relay did not catch up with the gateway');
    await sleep(50);
  }
  await sleep(100);
}

/** The gateway (MQTT side) → redis-server streams → a relay (Socket.IO side). */
async function startRelayed(env, opts) {
  const redis = await startRedis();
  const upstream = {
    REDIS_HOST: '127.0.0.1',
    REDIS_PORT: String(redis.port),
    EDGE_GATEWAY_SINKS__REDIS__MODE: 'stream',
    EDGE_GATEWAY_SINKS__REDIS__DELIVERY__LINGER_MS: '1',
  };
  const edge = await startProcess('run', { ...env, ...upstream }, opts);
  const relay = await startProcess('relay', { ...env, ...upstream, EDGE_GATEWAY_GATEWAY_ID: 'conformance-relay' }, {});
  gateways.delete(edge);
  gateways.delete(relay);
  const gw = {
    ...relay,
    mqttPort: edge.mqttPort,
    publish: edge.publish,
    publishLines: edge.publishLines,
    edge,
    async stop() {
      gateways.delete(gw);
      const r = await relay.stop();
      await edge.stop();
      await redis.stop();
      return r;
    },
  };
  gateways.add(gw);
  return gw;
}

async function startProcess(command, env = {}, { dataDir, args = [] } = {}) {
  const httpPort = await freePort();
  const mqttPort = await freePort();
  const dir = dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'egw-conf-'));
  const child = spawn(BIN, [command, '--data-dir', dir, ...args], {
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: String(httpPort),
      EDGE_GATEWAY_MQTT__LISTEN: `127.0.0.1:${mqttPort}`,
      EDGE_GATEWAY_GATEWAY_ID: 'conformance-gw',
      RATE_LIMIT_MAX_REQUESTS: '100000',
      LOG_LEVEL: 'warn',
      EDGE_GATEWAY_SOCKETIO__SYSTEM_STATUS_INTERVAL_MS: '300',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited early: ${stderr}`);
    try {
      const r = await httpGet(httpPort, '/health');
      if (r.status === 200) break;
    } catch (_) { /* not yet listening */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway not healthy in time: ${stderr}`);
    }
    await sleep(50);
  }
  const gw = {
    httpPort,
    mqttPort,
    dataDir: dir,
    url: `http://127.0.0.1:${httpPort}`,
    child,
    stderr: () => stderr,
    exited,
    async stop() {
      gateways.delete(gw);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10000);
        const r = await exited;
        clearTimeout(t);
        return r;
      }
      return exited;
    },
    async kill9() {
      child.kill('SIGKILL');
      return exited;
    },
    metrics: async () => (await httpGet(httpPort, '/metrics')).body,
    publish: (topic, payload, qos = 1) => publish(mqttPort, topic, payload, qos),
    publishLines: (topic, lines) => publishLines(mqttPort, topic, lines),
  };
  gateways.add(gw);
  return gw;
}

/** Publishes with mosquitto_pub (waits for PUBACK at QoS 1). */
function publish(port, topic, payload, qos = 1) {
  execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-q', String(qos), '-t', topic, '-m', payload], {
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 10000,
  });
}

/** Publishes one QoS 1 message per line over one connection (`mosquitto_pub -l`). */
function publishLines(port, topic, lines) {
  execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-q', '1', '-t', topic, '-l'], {
    input: lines.join('\n') + '\n',
    stdio: ['pipe', 'ignore', 'pipe'],
    timeout: 30000,
  });
}

/** Resolves once `pred()` holds; rejects with `what` after `timeout` ms. */
async function until(pred, what, timeout = 30000) {
  const end = Date.now() + timeout;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

/** A metric sample's value from Prometheus text (0 if absent). */
function metric(text, nameAndLabels) {
  const line = text.split('\n').find((l) => l.startsWith(nameAndLabels + ' '));
  return line ? Number(line.split(' ').pop()) : 0;
}

const FLAVORS = [
  { name: 'v4 websocket', version: 4, transports: ['websocket'] },
  { name: 'v4 polling', version: 4, transports: ['polling'] },
  { name: 'v2 websocket (EIO3)', version: 2, transports: ['websocket'] },
  { name: 'v2 polling (EIO3)', version: 2, transports: ['polling'] },
];

/** Connects and resolves once connected; rejects with the connect_error. */
function connect(gw, { version = 4, transports = ['websocket'], auth, query, extraHeaders } = {}) {
  const opts = { transports, reconnection: false, forceNew: true, timeout: 5000 };
  if (auth) opts.auth = auth;
  if (query) opts.query = query;
  if (extraHeaders) {
    opts.extraHeaders = extraHeaders;
    if (version === 2) opts.transportOptions = { polling: { extraHeaders }, websocket: { extraHeaders } };
  }
  const socket = client(version, gw.url, opts);
  const received = [];
  socket.onAny
    ? socket.onAny((event, ...args) => received.push({ event, args }))
    : null;
  socket.received = received;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('connect timeout')), 8000);
    socket.on('connect', () => { clearTimeout(t); resolve(socket); });
    socket.on('connect_error', (e) => { clearTimeout(t); socket.close(); reject(e); });
    socket.on('error', (e) => { clearTimeout(t); socket.close(); reject(e instanceof Error ? e : new Error(String(e))); });
  });
}

/** Resolves with the first `event` payload matching `pred`. */
function waitFor(socket, event, pred = () => true, timeout = 20000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`timed out waiting for ${event}`));
    }, timeout);
    function on(data) {
      if (pred(data)) {
        clearTimeout(t);
        socket.off(event, on);
        resolve(data);
      }
    }
    socket.on(event, on);
  });
}

/** Collects every payload of `event` until `ms` pass. */
function collect(socket, event, ms) {
  const seen = [];
  const on = (d) => seen.push(d);
  socket.on(event, on);
  return sleep(ms).then(() => { socket.off(event, on); return seen; });
}

/** Emits with an ack; resolves with the ack payload. */
function request(socket, event, params, timeout = 20000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ack for ${event}`)), timeout);
    socket.emit(event, params, (reply) => { clearTimeout(t); resolve(reply); });
  });
}

function b64url(obj) {
  return Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj)).toString('base64url');
}

/** HS256 JWT made with node's crypto. */
function jwt(claims, secret) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

module.exports = {
  BIN, FLAVORS, ISO_MS, startGateway, settled, closeClients, stopGateways, client, connect, waitFor, collect, request, jwt, metric, sleep, httpGet, freePort, publish, until,
};
