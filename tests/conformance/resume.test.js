// Resume from `seq`: a dashboard that reconnects with the last `seq` it saw gets every record
// it missed in its rooms, in order, then live ones, with no gap (socket.io-client v4 sends
// `auth.after`, v2 the `after` query parameter); and is told when the store no longer holds
// them all.
'use strict';

const { test, before, after, afterEach, describe } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const KEEP = 200;
let gw;
let n = 0;
const dev = (p) => `${p}-${++n}`;

before(async () => {
  gw = await h.startGateway({
    EDGE_GATEWAY_DEVICES__OFFLINE_AFTER_MS: '60000',
    EDGE_GATEWAY_SOCKETIO__RESUME_MAX_RECORDS: String(KEEP),
    EDGE_GATEWAY_SOCKETIO__RESUME_RECORDS_PER_SEC: '2000',
  });
});
afterEach(() => h.closeClients());
after(async () => {
  const r = await gw.stop();
  assert.equal(r.code, 0, `graceful exit: ${gw.stderr()}`);
});

const values = (from, count) => Array.from({ length: count }, (_, i) => String(from + i));

/** The seqs of `sensor:reading` for `d` as `socket` receives them. */
function seqsOf(socket, d) {
  const seqs = [];
  socket.on('sensor:reading', (r) => { if (r.deviceId === d) seqs.push(r.seq); });
  return seqs;
}

/** Every seq once, first arrivals strictly increasing: in order, duplicates only behind. */
function assertInOrder(seqs, expected) {
  const firsts = [];
  const seen = new Set();
  for (const s of seqs) {
    if (!seen.has(s)) { seen.add(s); firsts.push(s); }
  }
  for (let i = 1; i < firsts.length; i++) {
    assert.ok(firsts[i] > firsts[i - 1], `out of order at ${i}: ${firsts.slice(Math.max(0, i - 3), i + 3)}`);
  }
  assert.deepEqual(firsts, expected);
  const dups = seqs.length - firsts.length;
  assert.ok(dups <= 50, `${dups} duplicates: only the few that race the join may come twice`);
}

/** The last seq a client saw before it went away, and the reference client's view. */
async function leaveAfter(flavor, d, count) {
  const ref = await h.connect(gw, flavor);
  const refSeqs = seqsOf(ref, d);
  ref.emit('subscribe:device', d);
  const a = await h.connect(gw, flavor);
  const aSeqs = seqsOf(a, d);
  a.emit('subscribe:device', d);
  await h.sleep(200);
  gw.publishLines(`sensors/${d}/temperature`, values(1, count));
  await h.until(() => aSeqs.length === count, 'the first readings');
  a.close();
  return { last: aSeqs[aSeqs.length - 1], refSeqs };
}

function resumeOpts(flavor, last) {
  return flavor.version === 2 ? { ...flavor, query: { after: last } } : { ...flavor, auth: { after: last } };
}

for (const flavor of h.FLAVORS) {
  describe(flavor.name, () => {
    test('missed records come first, in order, then live ones, with no gap', async () => {
      const d = dev('resume');
      const { last, refSeqs } = await leaveAfter(flavor, d, 20);
      gw.publishLines(`sensors/${d}/temperature`, values(100, 150));
      await h.until(() => refSeqs.length === 170, 'the reference client to see the missed readings');

      const b = await h.connect(gw, resumeOpts(flavor, last));
      const bSeqs = seqsOf(b, d);
      const done = h.waitFor(b, 'resume:done');
      b.emit('subscribe:device', d);
      // Live readings while the replay runs.
      gw.publishLines(`sensors/${d}/temperature`, values(500, 30));
      await h.until(() => refSeqs.length === 200, 'the live readings');
      const expected = refSeqs.filter((s) => s > last);
      await h.until(() => new Set(bSeqs).size >= expected.length, `all ${expected.length} records (got ${new Set(bSeqs).size})`);
      assert.ok((await done).seq >= last + 150);
      assertInOrder(bSeqs, expected);
      assert.ok(!b.received.some((e) => e.event === 'resume:truncated'));
    });

    test('a cursor older than the replay bound is told so and gets the newest records', async () => {
      const d = dev('trunc');
      const { last, refSeqs } = await leaveAfter(flavor, d, 5);
      gw.publishLines(`sensors/${d}/temperature`, values(100, KEEP + 50));
      await h.until(() => refSeqs.length === KEEP + 55, 'the missed readings');

      const b = await h.connect(gw, resumeOpts(flavor, last));
      const truncated = h.waitFor(b, 'resume:truncated');
      const bSeqs = seqsOf(b, d);
      b.emit('subscribe:device', d);
      const t = await truncated;
      assert.equal(t.after, last);
      assert.ok(t.oldestSeq > last + 1, JSON.stringify(t));
      await h.waitFor(b, 'resume:done');
      const expected = refSeqs.filter((s) => s >= t.oldestSeq);
      assert.ok(expected.length > 0 && expected.length <= KEEP);
      assertInOrder(bSeqs, expected);
    });
  });
}

test('a client without a cursor is not replayed to', async () => {
  const d = dev('fresh');
  const { refSeqs } = await leaveAfter(h.FLAVORS[0], d, 10);
  await h.until(() => refSeqs.length === 10, 'the readings');
  const c = await h.connect(gw, h.FLAVORS[0]);
  const seqs = seqsOf(c, d);
  c.emit('subscribe:device', d);
  await h.sleep(500);
  assert.deepEqual(seqs, []);
  assert.ok(!c.received.some((e) => e.event === 'resume:done'));
});
