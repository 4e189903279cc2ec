// The alarm events with socket.io-client v4 against the real binary: `alert` keeps the
// reference payload and fires on raise and escalation only; `alarm:state` carries every
// transition; `alarm:ack` / `alarm:shelve` / `alarm:unshelve` / `get:alarms` answer through
// the ack callback, with the acting user taken from the JWT.
'use strict';

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const SECRET = 'alarm-test-secret';
let gw;

before(async () => {
  gw = await h.startGateway({ JWT_SECRET: SECRET });
});
afterEach(() => h.closeClients());
after(() => h.stopGateways());

async function operator(sub) {
  const token = h.jwt({ sub, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);
  const s = await h.connect(gw, { auth: { token } });
  s.emit('subscribe-alerts');
  s.emit('subscribe-system');
  await h.sleep(200);
  return s;
}

const state = (s, alarmId, transition) =>
  h.waitFor(s, 'alarm:state', (a) => a.alarmId === alarmId && a.transition === transition);

test('raise, ack, shelve and unshelve from socket.io-client v4', async () => {
  const s = await operator('alice');
  const alarmId = 'node-1/temperature/threshold';
  const alerts = [];
  s.on('alert', (a) => alerts.push(a));

  const raised = state(s, alarmId, 'raise');
  const alert = h.waitFor(s, 'alert', (a) => a.deviceId === 'node-1');
  gw.publish('sensors/node-1/temperature', '40');
  const a = await alert;
  assert.deepEqual(Object.keys(a).sort(),
    ['alertId', 'deviceId', 'gatewayId', 'message', 'sensorType', 'seq', 'severity', 'threshold', 'timestamp', 'type']);
  assert.equal(a.severity, 'warning');
  assert.deepEqual(a.threshold, { value: 35, operator: '>', current: 40 });
  const r = await raised;
  assert.equal(r.state, 'active_unacked');
  assert.equal(r.previousState, 'normal');
  assert.ok(Number.isInteger(r.seq) && r.seq > a.seq);

  const list = await h.request(s, 'get:alarms', { deviceId: 'node-1' });
  assert.equal(list.success, true);
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].alarmId, alarmId);
  assert.equal(list.data[0].state, 'active_unacked');
  assert.ok(list.seq >= r.seq);
  // /health's figures follow at the pipeline's next tick.
  const unacked = async () => JSON.parse((await h.httpGet(gw.httpPort, '/health')).body).alarms.unacknowledged;
  for (let i = 0; i < 200 && (await unacked()) !== 1; i++) await h.sleep(50);
  assert.equal(await unacked(), 1);

  const acked = state(s, alarmId, 'ack');
  const reply = await h.request(s, 'alarm:ack', { alarmId, comment: 'checking the oven' });
  assert.deepEqual(reply, { success: true, message: 'Alarm acknowledged', alarmId });
  const ack = await acked;
  assert.equal(ack.state, 'active_acked');
  assert.equal(ack.user, 'alice');
  assert.equal(ack.comment, 'checking the oven');

  // Acknowledging again, an unknown alarm, bad params: the reference's refusal shape.
  const again = await h.request(s, 'alarm:ack', { alarmId });
  assert.equal(again.success, false);
  assert.equal(again.message, 'Alarm action refused');
  assert.match(again.error, /active_acked/);
  const unknown = await h.request(s, 'alarm:ack', { alarmId: 'nope/temperature/threshold' });
  assert.equal(unknown.success, false);
  assert.equal(unknown.message, 'Unknown alarm');
  const bad = await h.request(s, 'alarm:shelve', { alarmId, minutes: -1 });
  assert.deepEqual(Object.keys(bad).sort(), ['error', 'message', 'success']);
  assert.equal(bad.message, 'Invalid alarm parameters');

  const shelved = state(s, alarmId, 'shelve');
  const sh = await h.request(s, 'alarm:shelve', { alarmId, minutes: 5, reason: 'sensor swap' });
  assert.equal(sh.success, true);
  const shv = await shelved;
  assert.equal(shv.state, 'shelved');
  assert.match(shv.shelvedUntil, h.ISO_MS);
  // Shelved alarms are not counted as active.
  await h.waitFor(s, 'system:status', (st) => st.metrics.activeAlerts === 0);

  const unshelved = state(s, alarmId, 'unshelve');
  assert.equal((await h.request(s, 'alarm:unshelve', { alarmId })).success, true);
  // Still past the limit: back as active and unacknowledged (ISA-18.2).
  assert.equal((await unshelved).state, 'active_unacked');

  // An escalation alerts again; a de-escalation and a clear do not.
  const escalated = state(s, alarmId, 'escalate');
  gw.publish('sensors/node-1/temperature', '50');
  await escalated;
  const cleared = state(s, alarmId, 'clear');
  gw.publish('sensors/node-1/temperature', '40');
  gw.publish('sensors/node-1/temperature', '20');
  assert.equal((await cleared).state, 'rtn_unacked');
  await h.sleep(300);
  assert.deepEqual(alerts.filter((x) => x.deviceId === 'node-1').map((x) => x.severity), ['warning', 'critical']);
});

test('alarm:state reaches the device room without subscribe-alerts', async () => {
  const s = await h.connect(gw, { auth: { token: h.jwt({ name: 'bob', exp: Math.floor(Date.now() / 1000) + 600 }, SECRET) } });
  s.emit('subscribe:device', 'node-2');
  await h.sleep(200);
  const raised = state(s, 'node-2/temperature/threshold', 'raise');
  gw.publish('sensors/node-2/temperature', '46');
  const r = await raised;
  assert.equal(r.severity, 'critical');
  const acked = state(s, r.alarmId, 'ack');
  await h.request(s, 'alarm:ack', { alarmId: r.alarmId });
  // No `sub`: the `name` claim is the user.
  assert.equal((await acked).user, 'bob');
});
