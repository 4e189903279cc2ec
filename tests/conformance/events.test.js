// Every event of the reference guide, with every schema field and type, over each client
// flavour: socket.io-client v4 (websocket, polling) and v2 (EIO3; websocket, polling).
'use strict';

const { test, before, after, afterEach, describe } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

function assertReading(r, { deviceId, sensorType, value }) {
  assert.deepEqual(Object.keys(r).sort(),
    ['deviceId', 'gatewayId', 'location', 'sensorType', 'seq', 'status', 'timestamp', 'unit', 'value']);
  assert.equal(r.deviceId, deviceId);
  assert.equal(r.sensorType, sensorType);
  assert.equal(r.value, value);
  assert.equal(typeof r.unit, 'string');
  assert.match(r.timestamp, h.ISO_MS);
  assert.ok(['normal', 'warning', 'critical'].includes(r.status));
  assert.equal(typeof r.location, 'string');
  assert.equal(r.gatewayId, 'conformance-gw');
  assert.ok(Number.isInteger(r.seq) && r.seq > 0);
}

function assertStatus(s, deviceId, status) {
  assert.deepEqual(Object.keys(s).sort(), ['deviceId', 'gatewayId', 'lastSeen', 'location', 'seq', 'status', 'timestamp']);
  assert.equal(s.deviceId, deviceId);
  assert.equal(s.status, status);
  assert.match(s.timestamp, h.ISO_MS);
  assert.ok(s.lastSeen === null || h.ISO_MS.test(s.lastSeen));
  assert.ok(Number.isInteger(s.seq));
}

let gw;
let n = 0;
// A distinct device per test so rooms and thresholds never interfere.
const dev = (p) => `${p}-${++n}`;

before(async () => {
  gw = await h.startGateway({ EDGE_GATEWAY_DEVICES__OFFLINE_AFTER_MS: '60000' });
});
afterEach(() => h.closeClients());
after(async () => {
  const r = await gw.stop();
  assert.equal(r.code, 0, `graceful exit: ${gw.stderr()}`);
});

for (const flavor of h.FLAVORS) {
  describe(flavor.name, () => {
    test('welcome on connect', async () => {
      const socket = h.client(flavor.version, gw.url, { transports: flavor.transports, forceNew: true, reconnection: false });
      const welcome = await h.waitFor(socket, 'welcome');
      assert.deepEqual(Object.keys(welcome).sort(), ['message', 'timestamp']);
      assert.equal(typeof welcome.message, 'string');
      assert.match(welcome.timestamp, h.ISO_MS);
      socket.close();
    });

    test('sensor:all and device:all to all-devices, with the reference schema', async () => {
      const s = await h.connect(gw, flavor);
      s.emit('subscribe-all-devices');
      await h.sleep(150);
      const d = dev('all');
      const online = h.waitFor(s, 'device:all', (x) => x.deviceId === d);
      const reading = h.waitFor(s, 'sensor:all', (x) => x.deviceId === d);
      gw.publish(`sensors/${d}/temperature`, JSON.stringify({ value: 25.5, unit: '°C', location: 'Assembly Line 1' }));
      assertReading(await reading, { deviceId: d, sensorType: 'temperature', value: 25.5 });
      const st = await online;
      assertStatus(st, d, 'online');
      assert.equal(st.location, 'Assembly Line 1');
      // A bare number works too, and a missing unit defaults from the sensor type.
      const bare = h.waitFor(s, 'sensor:all', (x) => x.deviceId === d && x.value === 21);
      gw.publish(`sensors/${d}/temperature`, '21', 0);
      const b = await bare;
      assert.equal(b.unit, '°C');
      assert.equal(b.location, 'Assembly Line 1');
      s.close();
    });

    test('subscribe:device isolates rooms; unsubscribe stops delivery', async () => {
      const a = dev('iso-a');
      const b = dev('iso-b');
      const s = await h.connect(gw, flavor);
      s.emit('subscribe:device', a);
      await h.sleep(150);
      const got = h.collect(s, 'sensor:reading', 1200);
      const allSeen = h.collect(s, 'sensor:all', 1200);
      const statusSeen = h.collect(s, 'device:status', 1200);
      gw.publish(`sensors/${a}/humidity`, '{"value": 40}');
      gw.publish(`sensors/${b}/humidity`, '{"value": 41}');
      const readings = await got;
      assert.deepEqual(readings.map((r) => [r.deviceId, r.value]), [[a, 40]]);
      assertReading(readings[0], { deviceId: a, sensorType: 'humidity', value: 40 });
      assert.deepEqual(await allSeen, [], 'not subscribed to all-devices');
      const statuses = await statusSeen;
      assert.deepEqual(statuses.map((x) => x.deviceId), [a]);
      assertStatus(statuses[0], a, 'online');

      s.emit('unsubscribe:device', a);
      await h.sleep(150);
      const after = h.collect(s, 'sensor:reading', 800);
      gw.publish(`sensors/${a}/humidity`, '{"value": 42}');
      assert.deepEqual(await after, []);
      s.close();
    });

    test('alerts: alert to alerts room, alert:device to the device room, alert:system to everyone', async () => {
      const d = dev('alarm');
      const subscriber = await h.connect(gw, flavor);
      const deviceWatcher = await h.connect(gw, flavor);
      const bystander = await h.connect(gw, flavor);
      subscriber.emit('subscribe-alerts');
      deviceWatcher.emit('subscribe:device', d);
      await h.sleep(150);
      const bystanderAlerts = h.collect(bystander, 'alert', 1500);
      const alert = h.waitFor(subscriber, 'alert', (x) => x.deviceId === d);
      const deviceAlert = h.waitFor(deviceWatcher, 'alert:device', (x) => x.deviceId === d);
      const systemAlert = h.waitFor(bystander, 'alert:system', (x) => x.deviceId === d);
      const critical = h.waitFor(deviceWatcher, 'sensor:reading', (x) => x.deviceId === d);
      gw.publish(`sensors/${d}/temperature`, '{"value": 50.5, "unit": "°C"}');
      const a = await alert;
      assert.deepEqual(Object.keys(a).sort(),
        ['alertId', 'deviceId', 'gatewayId', 'message', 'sensorType', 'seq', 'severity', 'threshold', 'timestamp', 'type']);
      assert.equal(typeof a.alertId, 'string');
      assert.equal(a.severity, 'critical');
      assert.equal(a.type, 'threshold');
      assert.equal(a.sensorType, 'temperature');
      assert.equal(typeof a.message, 'string');
      assert.match(a.timestamp, h.ISO_MS);
      assert.deepEqual(a.threshold, { value: 45, operator: '>', current: 50.5 });
      assert.deepEqual(await deviceAlert, a);
      assert.deepEqual(await systemAlert, a);
      assert.equal((await critical).status, 'critical');
      assert.deepEqual(await bystanderAlerts, [], 'alert only goes to the alerts room');
      for (const s of [subscriber, deviceWatcher, bystander]) s.close();
    });

    test('system:status to system-status subscribers only', async () => {
      const s = await h.connect(gw, flavor);
      const other = await h.connect(gw, flavor);
      const otherSeen = h.collect(other, 'system:status', 1000);
      s.emit('subscribe-system');
      const st = await h.waitFor(s, 'system:status', () => true, 3000);
      assert.deepEqual(Object.keys(st).sort(), ['metrics', 'services', 'status', 'timestamp', 'uptime']);
      assert.ok(['healthy', 'degraded', 'down'].includes(st.status));
      assert.match(st.timestamp, h.ISO_MS);
      assert.equal(typeof st.uptime, 'number');
      assert.deepEqual(Object.keys(st.services).sort(), ['mqtt', 'store', 'websocket-service']);
      assert.equal(st.services.store, 'healthy');
      assert.deepEqual(Object.keys(st.metrics).sort(), ['activeAlerts', 'activeDevices', 'dataPointsPerMinute', 'totalDevices']);
      for (const v of Object.values(st.metrics)) assert.ok(Number.isInteger(v) && v >= 0);
      assert.ok(st.metrics.totalDevices >= st.metrics.activeDevices);
      assert.deepEqual(await otherSeen, []);
      s.close();
      other.close();
    });

    test('get:history answers from the store, oldest first, with filters', async () => {
      const d = dev('hist');
      for (const [st, v] of [['pressure', 1001], ['pressure', 1002], ['flow', 7], ['pressure', 1003]]) {
        gw.publish(`sensors/${d}/${st}`, JSON.stringify({ value: v }));
      }
      await h.sleep(300);
      await h.settled(gw);
      const s = await h.connect(gw, flavor);
      const all = await h.request(s, 'get:history', { deviceId: d });
      assert.equal(all.success, true);
      assert.equal(typeof all.message, 'string');
      assert.deepEqual(all.data.map((r) => r.value), [1001, 1002, 7, 1003]);
      for (const r of all.data) assertReading(r, { deviceId: d, sensorType: r.sensorType, value: r.value });
      const seqs = all.data.map((r) => r.seq);
      assert.deepEqual([...seqs].sort((x, y) => x - y), seqs);
      const pressure = await h.request(s, 'get:history', { deviceId: d, sensorType: 'pressure', limit: 2 });
      assert.deepEqual(pressure.data.map((r) => r.value), [1002, 1003], 'newest `limit`, oldest first');
      const window = await h.request(s, 'get:history', {
        deviceId: d, from: all.data[1].timestamp, to: all.data[2].timestamp,
      });
      assert.deepEqual(window.data.map((r) => r.value), [1002, 7]);
      const none = await h.request(s, 'get:history', { deviceId: 'never-seen-device' });
      assert.deepEqual(none, { success: true, message: none.message, data: [] });
      s.close();
    });

    test('get:history rejects invalid params with a message naming the problem', async () => {
      const s = await h.connect(gw, flavor);
      const cases = [
        [{}, /deviceId/],
        [{ deviceId: 42 }, /deviceId/],
        [{ deviceId: 'd', from: 'not-a-date' }, /from/],
        [{ deviceId: 'd', to: 'tomorrow' }, /to/],
        [{ deviceId: 'd', from: '2025-06-13T11:00:00Z', to: '2025-06-13T10:00:00Z' }, /after/],
        [{ deviceId: 'd', limit: 0 }, /limit/],
        [{ deviceId: 'd', limit: -5 }, /limit/],
        [{ deviceId: 'd', limit: 10001 }, /limit/],
        [{ deviceId: 'd', limit: 'ten' }, /limit/],
        [{ deviceId: 'd', limit: 1.5 }, /limit/],
        ['device-1', /object/],
      ];
      for (const [params, pattern] of cases) {
        const r = await h.request(s, 'get:history', params);
        assert.equal(r.success, false, JSON.stringify(params));
        assert.equal(typeof r.message, 'string');
        assert.match(r.error, pattern, JSON.stringify(params));
        assert.equal(r.data, undefined);
      }
      s.close();
    });

    if (flavor.version === 4) {
      // socket.io-client v2 reserves 'ping'/'pong' for its own heartbeat: a v2 client cannot emit them.
      test('ping → pong', async () => {
        const s = await h.connect(gw, flavor);
        const pong = new Promise((resolve) => s.on('pong', (...args) => resolve(args)));
        s.emit('ping');
        assert.deepEqual(await pong, [], 'pong carries no payload, like socket.emit("pong")');
        s.close();
      });
    }
  });
}

test('device status topic, last-will style, reaches device:status and device:all', async () => {
  const d = dev('will');
  const s = await h.connect(gw);
  s.emit('subscribe-all-devices');
  s.emit('subscribe:device', d);
  await h.sleep(150);
  const maint = h.waitFor(s, 'device:status', (x) => x.deviceId === d && x.status === 'maintenance');
  gw.publish(`devices/${d}/status`, '{"status":"maintenance","location":"Bay 4"}');
  const m = await maint;
  assertStatus(m, d, 'maintenance');
  assert.equal(m.location, 'Bay 4');
  const offline = h.waitFor(s, 'device:all', (x) => x.deviceId === d && x.status === 'offline');
  const alert = h.waitFor(s, 'alert:device', (x) => x.deviceId === d && x.type === 'connectivity');
  gw.publish(`devices/${d}/status`, 'offline');
  assertStatus(await offline, d, 'offline');
  const a = await alert;
  assert.equal(a.severity, 'warning');
  assert.equal(a.threshold, undefined);
  s.close();
});
