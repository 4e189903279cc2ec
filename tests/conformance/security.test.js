// Security and robustness: JWT on/off, Origin checks, max clients, rate limits, payload caps,
// garbage packets and malformed MQTT, each while another client keeps being served.
'use strict';

const { test, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const h = require('./harness');
const RELAY = Boolean(process.env.EDGE_GATEWAY_CONFORMANCE_RELAY);

afterEach(() => h.closeClients());
after(() => h.stopGateways());

const SECRET = 'conformance-secret';
const now = () => Math.floor(Date.now() / 1000);

async function refused(promise, pattern) {
  await assert.rejects(promise, (e) => {
    if (pattern) assert.match(String(e.message || e), pattern);
    return true;
  });
}

test('JWT_SECRET set: valid HS256 token with exp accepted, anything else refused', async (t) => {
  const gw = await h.startGateway({ JWT_SECRET: SECRET });
  t.after(() => gw.stop());
  const good = h.jwt({ sub: 'dash', exp: now() + 600 }, SECRET);
  const s = await h.connect(gw, { auth: { token: good } });
  s.emit('subscribe-all-devices');
  await h.sleep(150);
  const r = h.waitFor(s, 'sensor:all');
  gw.publish('sensors/jwt-dev/temperature', '20');
  assert.equal((await r).deviceId, 'jwt-dev');
  s.close();

  await refused(h.connect(gw), /token missing/);
  await refused(h.connect(gw, { auth: { token: h.jwt({ exp: now() + 600 }, 'wrong-secret') } }), /invalid token/);
  await refused(h.connect(gw, { auth: { token: h.jwt({ exp: now() - 600 }, SECRET) } }), /invalid token/);
  await refused(h.connect(gw, { auth: { token: h.jwt({ sub: 'no-exp' }, SECRET) } }), /invalid token/);
  await refused(h.connect(gw, { auth: { token: 'not.a.jwt' } }), /invalid token/);

  // socket.io-client v2 has no auth payload: the token goes in the query.
  const v2 = await h.connect(gw, { version: 2, query: { token: good } });
  v2.close();
  await refused(h.connect(gw, { version: 2 }));
  const metrics = await gw.metrics();
  assert.ok(h.metric(metrics, 'edge_gateway_socketio_rejected_total{reason="auth"}') >= 6, metrics);
});

test('JWT_SECRET unset: no token needed', async (t) => {
  const gw = await h.startGateway();
  t.after(() => gw.stop());
  const s = await h.connect(gw);
  s.close();
});

test('Origin checked against CORS_ORIGINS on websocket and polling', async (t) => {
  const gw = await h.startGateway({ CORS_ORIGINS: 'http://dash.example:5173,https://ops.example' });
  t.after(() => gw.stop());
  for (const transports of [['websocket'], ['polling']]) {
    const ok = await h.connect(gw, { transports, extraHeaders: { Origin: 'http://dash.example:5173' } });
    ok.close();
    await refused(h.connect(gw, { transports, extraHeaders: { Origin: 'http://evil.example' } }));
  }
  // No Origin (a non-browser client) is allowed.
  const plain = await h.connect(gw);
  plain.close();
  // CORS headers on polling for an allowed origin, none for another.
  const allowed = await h.httpGet(gw.httpPort, '/socket.io/?EIO=4&transport=polling', { Origin: 'https://ops.example' });
  assert.equal(allowed.status, 200);
  assert.equal(allowed.headers['access-control-allow-origin'], 'https://ops.example');
  assert.equal(allowed.headers['access-control-allow-credentials'], 'true');
  const denied = await h.httpGet(gw.httpPort, '/socket.io/?EIO=4&transport=polling', { Origin: 'http://evil.example' });
  assert.equal(denied.status, 403);
});

test('SOCKET_IO_MAX_CLIENTS: the client over the limit is refused, the others keep working', async (t) => {
  const gw = await h.startGateway({ SOCKET_IO_MAX_CLIENTS: '2' });
  t.after(() => gw.stop());
  const a = await h.connect(gw);
  const b = await h.connect(gw);
  await refused(h.connect(gw), /SOCKET_IO_MAX_CLIENTS/);
  a.emit('subscribe-all-devices');
  await h.sleep(150);
  const r = h.waitFor(a, 'sensor:all');
  gw.publish('sensors/max-dev/temperature', '22');
  assert.equal((await r).value, 22);
  b.close();
  await h.sleep(300);
  const c = await h.connect(gw);
  for (const s of [a, c]) s.close();
});

test('RATE_LIMIT_*: per-IP handshakes get 429, per-socket events get a rate-limit ack', async (t) => {
  const gw = await h.startGateway({ RATE_LIMIT_MAX_REQUESTS: '3', RATE_LIMIT_WINDOW: '60000' });
  t.after(() => gw.stop());
  const s = await h.connect(gw);
  const replies = [];
  for (let i = 0; i < 4; i++) replies.push(await h.request(s, 'get:history', { deviceId: 'x' }));
  assert.deepEqual(replies.map((r) => r.success), [true, true, true, false]);
  assert.match(replies[3].message, /rate limit/i);
  await h.connect(gw).then((x) => x.close());
  await h.connect(gw).then((x) => x.close());
  const over = await h.httpGet(gw.httpPort, '/socket.io/?EIO=4&transport=polling');
  assert.equal(over.status, 429);
  s.close();
});

/** A raw engine.io v4 websocket, connected to the main namespace. */
function rawSocket(gw) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${gw.httpPort}/socket.io/?EIO=4&transport=websocket`);
    ws.on('error', reject);
    ws.on('message', (m) => {
      const text = m.toString();
      if (text.startsWith('0')) ws.send('40');
      if (text.startsWith('40')) resolve(ws);
    });
  });
}

const closed = (ws) => new Promise((resolve) => {
  if (ws.readyState === WebSocket.CLOSED) return resolve();
  ws.on('close', () => resolve());
  setTimeout(resolve, 5000);
});

test('bad Socket.IO input closes only that client; others are still served', async (t) => {
  const gw = await h.startGateway();
  t.after(() => gw.stop());
  const watcher = await h.connect(gw);
  watcher.emit('subscribe-all-devices');
  await h.sleep(150);

  const big = await rawSocket(gw);
  big.send('42["get:history",' + JSON.stringify({ deviceId: 'x'.repeat(2 * 1024 * 1024) }) + ']');
  await closed(big);
  assert.equal(big.readyState, WebSocket.CLOSED, '2 MB frame closes the connection');

  for (const junk of ['42["unterminated', '4zzz', '9', Buffer.from([0xff, 0x00, 0xfe, 0x13]), '42{"not":"an array"}']) {
    const ws = await rawSocket(gw);
    ws.send(junk);
    await closed(ws);
    assert.equal(ws.readyState, WebSocket.CLOSED, `garbage ${JSON.stringify(String(junk))} closes the connection`);
  }

  // Oversize polling body.
  const handshake = await h.httpGet(gw.httpPort, '/socket.io/?EIO=4&transport=polling');
  const sid = JSON.parse(handshake.body.slice(1)).sid;
  const status = await new Promise((resolve) => {
    const req = require('node:http').request({
      host: '127.0.0.1', port: gw.httpPort, method: 'POST',
      path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { 'content-type': 'text/plain' },
    }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', () => resolve('reset'));
    req.end('4' + 'x'.repeat(200 * 1024));
  });
  assert.notEqual(status, 200, 'oversize polling body refused');

  const r = h.waitFor(watcher, 'sensor:all', (x) => x.deviceId === 'survivor');
  gw.publish('sensors/survivor/temperature', '23.5');
  assert.equal((await r).value, 23.5);
  assert.equal(watcher.connected, true);
  watcher.close();
});

test('malformed MQTT payloads are counted by reason and good readings keep flowing', { skip: RELAY && 'MQTT ingest is the gateway\'s; a relay has none' }, async (t) => {
  const gw = await h.startGateway();
  t.after(() => gw.stop());
  const s = await h.connect(gw);
  s.emit('subscribe-all-devices');
  await h.sleep(150);
  const bad = [
    ['sensors/mal/temperature', '{broken json', 'bad_json'],
    ['sensors/mal/temperature', '{"value": "hot"}', 'bad_value'],
    ['sensors/mal/temperature', 'warm', 'bad_value'],
    ['sensors/mal', '12', 'bad_topic'],
    ['factory/mal/temperature', '12', 'bad_topic'],
    ['sensors/mal/temperature', '{"value": 1, "status": "fine"}', 'bad_field'],
    ['devices/mal/status', 'asleep', 'bad_value'],
    ['sensors/mal/temperature', JSON.stringify({ value: 1, pad: 'x'.repeat(20000) }), 'oversize'],
  ];
  const none = h.collect(s, 'sensor:all', 800);
  for (const [topic, payload] of bad) gw.publish(topic, payload, 1);
  assert.deepEqual(await none, []);
  const good = h.waitFor(s, 'sensor:all', (x) => x.deviceId === 'mal');
  gw.publish('sensors/mal/temperature', '{"value": 19.5}', 0);
  assert.equal((await good).value, 19.5);
  // Live at once; counted as accepted once its durable commit returned (the cadence).
  let m = await gw.metrics();
  for (let i = 0; i < 100 && h.metric(m, 'edge_gateway_readings_accepted_total') < 1; i++) {
    await h.sleep(50);
    m = await gw.metrics();
  }
  const count = (reason) => h.metric(m, `edge_gateway_readings_rejected_total{reason="${reason}"}`);
  assert.equal(count('bad_json'), 1);
  assert.equal(count('bad_value'), 3);
  assert.equal(count('bad_topic'), 2);
  assert.equal(count('bad_field'), 1);
  assert.equal(count('oversize'), 1);
  assert.equal(h.metric(m, 'edge_gateway_readings_accepted_total'), 1);
  const health = JSON.parse((await h.httpGet(gw.httpPort, '/health')).body);
  assert.equal(health.status, 'healthy');
  s.close();
});

test('/health and /metrics', { skip: RELAY && 'checks the MQTT component; tests/relay.rs checks the relay\'s /health' }, async (t) => {
  const gw = await h.startGateway();
  t.after(() => gw.stop());
  const s = await h.connect(gw);
  const health = await h.httpGet(gw.httpPort, '/health');
  assert.equal(health.status, 200);
  const body = JSON.parse(health.body);
  assert.equal(body.status, 'healthy');
  assert.equal(body.components.store.status, 'healthy');
  assert.equal(body.components.mqtt.status, 'healthy');
  assert.equal(body.components.socketio.clients, 1);
  const m = await gw.metrics();
  assert.equal(h.metric(m, 'edge_gateway_socketio_clients'), 1);
  for (const name of ['edge_gateway_devices_online', 'edge_gateway_store_file_bytes']) {
    assert.ok(m.includes(name), name);
  }
  s.close();

  const off = await h.startGateway({ METRICS_ENABLED: 'false' });
  t.after(() => off.stop());
  assert.equal((await h.httpGet(off.httpPort, '/metrics')).status, 404);
});

test('SIGTERM shuts down cleanly with exit code 0 and disconnects clients', async () => {
  const gw = await h.startGateway();
  const s = await h.connect(gw);
  const gone = new Promise((resolve) => s.on('disconnect', resolve));
  const r = await gw.stop();
  assert.equal(r.code, 0);
  await gone;
});
