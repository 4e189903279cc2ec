// The built-in dashboard in Debian's headless Chromium (no browser download), driven by
// playwright-core against the real gateway binary started by tests/dashboard.rs. Every request
// to a non-loopback address is aborted and counted: the page must need nothing from outside.
// Assertions read the page's own state (`window.__dashboard`), not pixels.
//
// Env: GATEWAY_URL (http://127.0.0.1:port), GATEWAY_MQTT_PORT, OUT_DIR (screenshots,
// figures.json), SCENARIO (main | load | auth | resume), JWT_SECRET (auth).
'use strict';
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { chromium } = require('playwright-core');
const { io } = require('socket.io-client');

const URL_ = process.env.GATEWAY_URL;
const MQTT_PORT = process.env.GATEWAY_MQTT_PORT;
const OUT = process.env.OUT_DIR;
const SCENARIO = process.env.SCENARIO || 'main';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

const figures = {};
const log = (...a) => console.log(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Polls `fn` (async) until it returns a truthy value; fails with `what` and the last value.
async function until(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

function mqtt(topic, payload) {
  execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', MQTT_PORT, '-q', '1', '-t', topic, '-m', payload]);
}

/// A context whose every request is checked: loopback goes on, anything else is aborted.
async function guardedContext(browser, options) {
  const context = await browser.newContext(options);
  const net = { requests: [], blocked: [], websockets: [] };
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.protocol === 'data:' || LOOPBACK.has(u.hostname)) return route.continue();
    net.blocked.push(u.href);
    return route.abort('blockedbyclient');
  });
  context.on('request', (r) => net.requests.push(r.url()));
  context.on('page', (p) => p.on('websocket', (ws) => net.websockets.push(ws.url())));
  return { context, net };
}

function assertLoopbackOnly(net) {
  assert.deepEqual(net.blocked, [], 'the page tried to reach outside the gateway');
  const gateway = new URL(URL_).host;
  for (const u of [...net.requests, ...net.websockets]) {
    if (u.startsWith('data:')) continue;
    assert.equal(new URL(u).host, gateway, `request to ${u} is not to the gateway`);
  }
}

async function openPage(context) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const assets = [];
  page.on('response', async (res) => {
    const u = new URL(res.url());
    if (u.pathname.startsWith('/health') || u.search.includes('EIO=')) return;
    const sizes = await res.request().sizes().catch(() => null);
    assets.push({ path: u.pathname, status: res.status(), encoding: res.headers()['content-encoding'],
      etag: res.headers().etag, bytes: sizes ? sizes.responseBodySize : null });
  });
  return { page, errors, assets };
}

const snap = (page) => page.evaluate(() => window.__dashboard.snapshot());
const trend = (page) => page.evaluate(() => window.__dashboard.trend());

/// Every reading of one series the gateway holds, by a plain socket.io-client.
async function storeSeqs(deviceId, sensorType, auth) {
  const s = io(URL_, { transports: ['websocket'], auth });
  try {
    const res = await s.timeout(15000).emitWithAck('get:history', { deviceId, sensorType, limit: 10000 });
    assert.ok(res.success, JSON.stringify(res));
    return res.data.map((r) => r.seq).sort((a, b) => a - b);
  } finally {
    s.close();
  }
}

/// The page's trend holds every stored reading of its series between its first and last seq.
async function assertTrendComplete(page) {
  const t = await trend(page);
  const held = new Set(t.seqs);
  const lo = t.seqs[0], hi = t.seqs[t.seqs.length - 1];
  const stored = (await storeSeqs(t.deviceId, t.sensorType)).filter((s) => s >= lo && s <= hi);
  const missing = stored.filter((s) => !held.has(s));
  assert.deepEqual(missing, [], `the trend misses stored readings (holds ${t.seqs.length})`);
  return t;
}

// ---- scenarios --------------------------------------------------------------------------

async function loadsAndShowsDevices(page, assets) {
  const t0 = Date.now();
  await page.goto(URL_);
  const s = await until('connected with live values', async () => {
    const s = await snap(page);
    return s.conn === 'connected' && s.firstLiveMs !== null && s.devices.length >= 3 && s;
  });
  figures.firstLiveMs = Math.round(s.firstLiveMs);
  figures.connectedAfterMs = Date.now() - t0;
  log(`ok - page loads, connects, first live value ${figures.firstLiveMs} ms after navigation`);
  const weight = assets.filter((a) => a.status === 200);
  for (const a of weight) assert.equal(a.encoding, 'gzip', `${a.path} is served compressed`);
  for (const a of weight) assert.ok(a.etag, `${a.path} has an ETag`);
  const paths = weight.map((a) => a.path).sort();
  assert.ok(paths.includes('/') && paths.some((p) => p.endsWith('/socket.io.min.js')) && paths.includes('/dashboard/app.js'), paths.join(' '));
  figures.pageWeightBytes = weight.reduce((n, a) => n + a.bytes, 0);
  figures.pageAssets = weight.map((a) => `${a.path}:${a.bytes}`);
  assert.ok(figures.pageWeightBytes > 0 && figures.pageWeightBytes <= 150 * 1024, `page weight ${figures.pageWeightBytes}`);
  log(`ok - page weight ${figures.pageWeightBytes} bytes compressed (${weight.length} files)`);
}

async function valuesUpdateLive(page) {
  const before = await snap(page);
  const sim = before.devices.find((d) => d.id.startsWith('sim-device-'));
  assert.ok(sim, 'a simulated device is shown');
  const [type, r0] = Object.entries(sim.sensors)[0];
  await until('a newer value of the same sensor', async () => {
    const d = (await snap(page)).devices.find((x) => x.id === sim.id);
    return d.sensors[type].seq > r0.seq;
  });
  const rows = await page.locator('#devices tbody tr').count();
  assert.ok(rows >= 3, `device rows shown: ${rows}`);
  const text = await page.locator('#devices tbody').innerText();
  assert.match(text, /sim-device-001/);
  assert.match(text, /Assembly Line 1/);
  log('ok - simulated devices shown with location, values update live');
}

async function trendFromHistoryThenLive(page) {
  await page.click('.chip[data-d="sim-device-001"]');
  const t1 = await until('history loaded into the trend', async () => {
    const t = await trend(page);
    return t.historyLoaded && t.historyCount >= 3 && t.chartPoints >= t.historyCount && t;
  });
  const maxHistory = t1.seqs[t1.seqs.length - 1];
  const t2 = await until('the trend extends live', async () => {
    const t = await trend(page);
    return t.seqs.filter((s) => s > maxHistory).length >= 3 && t.chartPoints > t1.chartPoints && t;
  });
  await assertTrendComplete(page);
  log(`ok - trend: ${t1.historyCount} points from get:history, then live (${t2.seqs.length} points, none missing)`);
}

async function alertAndAlarm(page) {
  mqtt('sensors/dash-press-1/temperature', '{"value": 99.5, "unit": "°C", "location": "Press Hall"}');
  const s = await until('the threshold alert', async () => {
    const s = await snap(page);
    return s.alerts.some((a) => a.deviceId === 'dash-press-1') && s;
  });
  const a = s.alerts.find((x) => x.deviceId === 'dash-press-1');
  assert.equal(a.severity, 'critical');
  assert.ok(s.notifications.some((n) => n.title === 'Alert Triggered' && n.message.startsWith('dash-press-1')));
  assert.match(await page.locator('#alerts').innerText(), /dash-press-1/);
  log('ok - threshold alert shown with its notification');

  const avail = await until('get:alarms answered', async () => {
    const s = await snap(page);
    return s.alarmsAvailable !== null && { v: s.alarmsAvailable };
  }, 20000);
  // This gateway has the alarm API: the panel must be there (a gateway without it hides it).
  assert.ok(avail.v, 'get:alarms answered: the alarm panel is shown');
  assert.equal(await page.locator('#alarms-panel').isHidden(), false);
  const alarm = await until('the alarm, unacknowledged', async () => (await snap(page)).alarms
    .find((x) => x.deviceId === 'dash-press-1' && /unack/.test(x.state)));
  await page.locator('#alarms tbody tr', { hasText: 'dash-press-1' }).locator('button[data-act="ack"]').click();
  await until('the alarm acknowledged from the page', async () => (await snap(page)).alarms
    .find((x) => x.alarmId === alarm.alarmId && !/unack/.test(x.state)));
  const answers = ['5', 'dashboard test'];
  const onDialog = (d) => d.accept(answers.shift());
  page.on('dialog', onDialog);
  await page.locator('#alarms tbody tr', { hasText: 'dash-press-1' }).locator('button[data-act="shelve"]').click();
  await until('the alarm shelved from the page', async () => (await snap(page)).alarms
    .find((x) => x.alarmId === alarm.alarmId && x.state === 'shelved'));
  page.off('dialog', onDialog);
  await page.locator('#alarms tbody tr', { hasText: 'dash-press-1' }).locator('button[data-act="unshelve"]').click();
  await until('the alarm unshelved from the page', async () => (await snap(page)).alarms
    .find((x) => x.alarmId === alarm.alarmId && x.state !== 'shelved'));
  log('ok - the alarm is acknowledged, shelved and unshelved from the page');
}

async function deviceOffline(page) {
  mqtt('devices/dash-press-1/status', 'offline');
  const s = await until('device offline', async () => {
    const s = await snap(page);
    return s.devices.some((d) => d.id === 'dash-press-1' && d.status === 'offline') && s;
  });
  assert.ok(s.notifications.some((n) => n.title === 'Device Offline' && n.message.includes('dash-press-1')));
  await page.fill('#filter', 'press');
  await page.selectOption('#status-filter', 'offline');
  await until('the filtered list', async () => (await snap(page)).shownRows === 1);
  assert.match(await page.locator('#devices tbody').innerText(), /dash-press-1\s+offline\s+Press Hall/);
  await page.fill('#filter', '');
  await page.selectOption('#status-filter', '');
  log('ok - device offline shown with its notification; search and status filter');
}

async function healthShowsSinks(page) {
  const s = await until('health with the redis sink', async () => {
    const s = await snap(page);
    return s.health && s.status && Object.keys(s.health.components.sinks).length > 0 && s;
  });
  const text = await page.locator('#health-panel').innerText();
  for (const name of Object.keys(s.health.components.sinks)) assert.match(text, new RegExp(`sink ${name}`));
  assert.match(text, /lag \d+ records/);
  assert.match(text, /readings \/ min/);
  assert.match(text, /store/);
  assert.match(text, /mqtt/);
  log('ok - health shows store, MQTT, sinks with lag, readings per minute');
}

async function phone(browser) {
  const { context, net } = await guardedContext(browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 1 });
  const { page, errors } = await openPage(context);
  await page.goto(URL_);
  await until('phone page live', async () => (await snap(page)).readings > 0);
  await page.click('.chip[data-d="sim-device-001"]');
  await until('phone trend', async () => (await trend(page)).chartPoints > 3);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling on a phone (page is ${width} px wide)`);
  await page.screenshot({ path: path.join(OUT, 'dashboard-phone.png') });
  assert.deepEqual(errors, []);
  assertLoopbackOnly(net);
  await context.close();
  log('ok - phone viewport: no horizontal scroll, screenshot saved');
}

async function main(browser) {
  const { context, net } = await guardedContext(browser, { viewport: { width: 1440, height: 900 } });
  const { page, errors, assets } = await openPage(context);
  await loadsAndShowsDevices(page, assets);
  await valuesUpdateLive(page);
  await trendFromHistoryThenLive(page);
  await alertAndAlarm(page);
  await deviceOffline(page);
  await healthShowsSinks(page);
  await page.screenshot({ path: path.join(OUT, 'dashboard-desktop.png') });
  assert.deepEqual(errors, [], 'no errors in the page');
  assertLoopbackOnly(net);
  figures.missed = (await snap(page)).missed;
  log(`ok - ${net.requests.length} requests and ${net.websockets.length} websockets, all to the gateway; none blocked`);
  await context.close();
  await phone(browser);
}

/// Many devices and a flood of readings: paging works, and the page's CPU is measured.
async function load(browser) {
  const devices = Number(process.env.EXPECT_DEVICES || 1000);
  const { context, net } = await guardedContext(browser, { viewport: { width: 1440, height: 900 } });
  const { page, errors } = await openPage(context);
  await page.goto(URL_);
  await until(`${devices} devices`, async () => (await snap(page)).devices.length >= devices * 0.98, 60000);
  const s = await snap(page);
  figures.loadFirstLiveMs = Math.round(s.firstLiveMs);
  assert.equal(s.shownRows, 50, 'one page of 50 rows');
  assert.match(await page.locator('#page').innerText(), /1 \/ 2\d/);
  await page.click('#next');
  await until('page 2', async () => /2 \/ /.test(await page.locator('#page').innerText()));
  await page.fill('#filter', 'sim-device-999');
  await until('filter to one device', async () => (await snap(page)).shownRows === 1);
  await page.fill('#filter', '');
  await page.click('.chip[data-d="sim-device-001"]');
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const metric = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const windowMs = 10000;
  const s0 = await snap(page); const m0 = await metric(); const t0 = Date.now();
  await sleep(windowMs);
  const s1 = await snap(page); const m1 = await metric(); const t1 = Date.now();
  const secs = (t1 - t0) / 1000;
  figures.loadReadingsPerSec = Math.round((s1.readings - s0.readings) / secs);
  // Records the gateway committed meanwhile (readings, status changes, alerts).
  figures.loadCommittedPerSec = Math.round((s1.lastSeq - s0.lastSeq) / secs);
  figures.loadMissedPerSec = Math.round((s1.missed - s0.missed) / secs);
  figures.loadTransport = s1.transport;
  figures.loadPageCpuPercent = Math.round(((m1.TaskDuration - m0.TaskDuration) / secs) * 1000) / 10;
  figures.loadScriptPercent = Math.round(((m1.ScriptDuration - m0.ScriptDuration) / secs) * 1000) / 10;
  figures.loadLayoutPercent = Math.round((((m1.LayoutDuration + m1.RecalcStyleDuration) - (m0.LayoutDuration + m0.RecalcStyleDuration)) / secs) * 1000) / 10;
  figures.loadJsHeapMiB = Math.round(m1.JSHeapUsedSize / 1048576);
  log(`ok - ${devices} devices paged and filtered; at ${figures.loadReadingsPerSec} readings/s the page's main thread is busy ${figures.loadPageCpuPercent} % (script ${figures.loadScriptPercent} %, style+layout ${figures.loadLayoutPercent} %)`);
  await page.screenshot({ path: path.join(OUT, 'dashboard-load.png') });
  figures.baselineCpuPercent = await baselineCpu(context, windowMs);
  log(`ok - the socket.io client alone, on the same stream, keeps the main thread busy ${figures.baselineCpuPercent} %`);
  assert.deepEqual(errors, []);
  assertLoopbackOnly(net);
  await context.close();
}

/// What receiving the stream costs without the dashboard: a gateway page with only the
/// socket.io client in the `all-devices` room, counting events.
async function baselineCpu(context, windowMs) {
  const page = await context.newPage();
  await page.goto(`${URL_}/health`);
  await page.addScriptTag({ url: '/socket.io/socket.io.min.js' });
  await page.evaluate(() => {
    window.n = 0;
    const s = io({ transports: ['websocket'] });
    s.on('connect', () => s.emit('subscribe-all-devices'));
    s.on('sensor:all', () => { window.n++; });
  });
  await until('the bare client receiving', async () => (await page.evaluate(() => window.n)) > 100);
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const task = async () => (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'TaskDuration').value;
  const d0 = await task(); const n0 = await page.evaluate(() => window.n); const t0 = Date.now();
  await sleep(windowMs);
  const d1 = await task(); const n1 = await page.evaluate(() => window.n); const secs = (Date.now() - t0) / 1000;
  figures.baselineReadingsPerSec = Math.round((n1 - n0) / secs);
  await page.close();
  return Math.round(((d1 - d0) / secs) * 1000) / 10;
}

function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/// With JWT_SECRET the page asks for a token and keeps it for the browser session.
async function auth(browser) {
  const { context, net } = await guardedContext(browser, { viewport: { width: 1024, height: 768 } });
  const { page } = await openPage(context);
  await page.goto(URL_);
  await until('the token prompt', async () => (await snap(page)).conn === 'auth' && (await page.locator('#login').isVisible()));
  await page.fill('#token', 'not-a-token');
  await page.click('#login button');
  await until('the refusal', async () => (await page.locator('#login-error').innerText()).includes('refused'));
  const token = jwt(process.env.JWT_SECRET, { sub: 'operator', exp: Math.floor(Date.now() / 1000) + 3600 });
  await page.fill('#token', token);
  await page.click('#login button');
  await until('connected with the token', async () => (await snap(page)).conn === 'connected');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('edge-gateway.token')), token);
  await page.reload();
  await until('connected again after reload without a prompt', async () => (await snap(page)).conn === 'connected');
  assert.equal(await page.locator('#login').isHidden(), true);
  assertLoopbackOnly(net);
  await context.close();
  log('ok - a token is asked for, a bad one refused, a good one kept for the session');
}

/// The connection is cut while readings keep being stored; after the reconnect the page's
/// trend holds every reading once (the gateway replays from `auth.after`).
async function resume(browser) {
  const { context, net } = await guardedContext(browser, { viewport: { width: 1440, height: 900 } });
  const { page, errors } = await openPage(context);
  await page.goto(URL_);
  await until('live', async () => (await snap(page)).readings > 0);
  await page.click('.chip[data-d="sim-device-001"]');
  await until('history', async () => (await trend(page)).historyLoaded);
  const before = await trend(page);
  await context.setOffline(true);
  await until('the page sees the connection gone', async () => (await snap(page)).conn !== 'connected', 60000);
  await sleep(4000);
  await context.setOffline(false);
  await until('reconnected', async () => (await snap(page)).conn === 'connected', 60000);
  const after = await until('readings from the gap and after', async () => {
    const t = await trend(page);
    return t.seqs.length > before.seqs.length + 20 && t;
  }, 60000);
  const t = await assertTrendComplete(page);
  figures.resumeDuplicatesDropped = (await snap(page)).duplicates;
  figures.resumeMissed = (await snap(page)).missed;
  assert.deepEqual(errors.filter((e) => !/ERR_INTERNET_DISCONNECTED/.test(e)), []);
  assertLoopbackOnly(net);
  await context.close();
  log(`ok - resume: ${after.seqs.length - before.seqs.length} readings after the cut, none missing, ${figures.resumeDuplicatesDropped} duplicates dropped (${t.seqs.length} held)`);
}

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS });
  try {
    await ({ main, load, auth, resume })[SCENARIO](browser);
  } finally {
    await browser.close();
  }
  fs.writeFileSync(path.join(OUT, `figures-${SCENARIO}.json`), JSON.stringify(figures, null, 2));
  log(`figures ${JSON.stringify(figures)}`);
})().catch((e) => {
  console.error(e && e.stack || e);
  process.exit(1);
});
