// Hardening (issue #15) with real socket.io clients: a JWT in the URL query is taken only from
// socket.io-client v2 (EIO3, no auth payload); v4 clients must send it in `auth`.
'use strict';

const { test, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

afterEach(() => h.closeClients());
after(() => h.stopGateways());

const SECRET = 'hardening-secret';
const now = () => Math.floor(Date.now() / 1000);

test('token in the URL query: refused from v4 clients, accepted from v2 clients', async (t) => {
  const gw = await h.startGateway({ JWT_SECRET: SECRET });
  t.after(() => gw.stop());
  const good = h.jwt({ sub: 'dash', exp: now() + 600 }, SECRET);
  for (const transports of [['websocket'], ['polling']]) {
    await assert.rejects(h.connect(gw, { transports, query: { token: good } }), /auth\.token/);
    const v2 = await h.connect(gw, { version: 2, transports, query: { token: good } });
    v2.close();
  }
  const v4 = await h.connect(gw, { auth: { token: good } });
  v4.close();
  const m = await gw.metrics();
  assert.ok(h.metric(m, 'edge_gateway_socketio_rejected_total{reason="auth"}') >= 2, m);
});

test('JWT nbf in the future and a token expired 1 s ago are refused', async (t) => {
  const gw = await h.startGateway({ JWT_SECRET: SECRET });
  t.after(() => gw.stop());
  const early = h.jwt({ sub: 'dash', exp: now() + 600, nbf: now() + 300 }, SECRET);
  await assert.rejects(h.connect(gw, { auth: { token: early } }), /invalid token/);
  const expired = h.jwt({ sub: 'dash', exp: now() - 1 }, SECRET);
  await assert.rejects(h.connect(gw, { auth: { token: expired } }), /invalid token/);
});
