// The built-in dashboard: a client of the gateway's public Socket.IO API (the reference
// events and rooms, `get:history`, `get:alarms`), nothing else. Events are queued as they
// arrive and applied to the page every 100 ms, so a flood of readings costs one render per
// tick. Every record carries `seq`: the highest one seen goes back on reconnect (`auth.after`)
// so the gateway replays what the page missed; a series keeps its points by `seq`, so a record
// sent twice (one racing the join) is dropped.

const TICK_MS = 100;
const PAGE_SIZE = 50;
const HOUR_MS = 3600_000;
const MAX_ALERTS = 100;
const MAX_TOASTS = 5;
const TOKEN_KEY = 'edge-gateway.token';
const SOCKET_PATH = document.querySelector('meta[name="socketio-path"]').content;

const $ = (id) => document.getElementById(id);
const byId = new Intl.Collator(undefined, { numeric: true }).compare;
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const S = {
  conn: 'connecting', attempt: 0, connectedAt: null, firstLiveMs: null,
  gatewayId: null, lastSeq: 0, duplicates: 0, missed: 0, truncated: null,
  devices: new Map(), // id -> {id, status, location, lastSeen, sensors: Map(type -> reading)}
  alerts: [], alertSeqs: new Set(), notifications: [],
  alarms: new Map(), alarmsAvailable: null, alarmsSeq: null,
  status: null, health: null, readings: 0,
  trend: { deviceId: null, sensorType: null, points: new Map(), historyLoaded: false, historyCount: 0 },
  page: 0, filter: '', statusFilter: '',
  sorted: [], // devices by id, rebuilt only when one is added
  visible: new Set(), // ids on the shown page: only their changes re-render the table
};
let queue = [];
const dirty = new Set();

// ---- connection -------------------------------------------------------------------------

// WebSocket first: long-polling carries a flood poorly (the gateway drops what a slow poller
// has not fetched); polling stays the fallback where a proxy refuses the upgrade.
const socket = io({
  path: SOCKET_PATH,
  transports: ['websocket', 'polling'],
  tryAllTransports: true,
  reconnectionDelay: 1000,
  reconnectionDelayMax: 15000,
  randomizationFactor: 0.5,
  auth: (cb) => {
    const a = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) a.token = token;
    if (S.lastSeq > 0) a.after = S.lastSeq;
    cb(a);
  },
});

function setConn(state, detail = '') {
  S.conn = state;
  const el = $('conn');
  el.className = `conn ${state}`;
  el.textContent = detail ? `${state} ${detail}` : state;
  $('retry').hidden = state !== 'failed';
}

socket.on('connect', () => {
  S.attempt = 0;
  S.connectedAt = S.connectedAt ?? performance.now();
  setConn('connected');
  $('login').hidden = true;
  notify('success', 'Connected', 'Real-time data connection established', 3000);
  socket.emit('subscribe-all-devices');
  socket.emit('subscribe-alerts');
  socket.emit('subscribe-system');
  loadAlarms();
  // No history reload here: on a reconnect the gateway replays what the page missed.
});
socket.on('disconnect', (reason) => {
  setConn(socket.active ? 'reconnecting' : 'failed', reason === 'io client disconnect' ? '' : `(${reason})`);
});
socket.io.on('reconnect_attempt', (n) => { S.attempt = n; setConn('reconnecting', `(attempt ${n})`); });
socket.io.on('reconnect_failed', () => setConn('failed'));
socket.on('connect_error', (err) => {
  const msg = String(err && err.message || err);
  if (socket.active) return setConn('reconnecting', S.attempt ? `(attempt ${S.attempt})` : '');
  // Refused by the gateway (no automatic retry): a token problem asks for a token.
  if (/authentication/i.test(msg)) {
    setConn('auth');
    sessionStorage.removeItem(TOKEN_KEY);
    $('login').hidden = false;
    $('login-error').textContent = /invalid/i.test(msg) ? 'The token was refused.' : '';
    $('token').focus();
  } else {
    setConn('failed', `(${msg})`);
  }
});
$('retry').onclick = () => socket.connect();
$('login').onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  setConn('connecting');
  socket.connect();
};

socket.on('welcome', () => {});
for (const ev of ['sensor:all', 'device:all', 'alert', 'alert:system', 'alarm:state']) {
  socket.on(ev, (r) => queue.push([ev, r]));
}
socket.on('system:status', (s) => { S.status = s; dirty.add('health'); });
socket.on('resume:truncated', (t) => {
  S.truncated = t;
  const el = $('truncated');
  el.hidden = false;
  el.textContent = `The gateway no longer holds records ${t.after + 1}–${t.oldestSeq - 1}: data from while this page was away before seq ${t.oldestSeq} is lost.`;
});

// ---- applying events --------------------------------------------------------------------

function seen(r) {
  if (typeof r.seq === 'number' && r.seq > S.lastSeq) {
    // Every stored record reaches the rooms this page is in (readings and status changes
    // `all-devices`, alerts and alarms `alerts`), so a jump in `seq` is what the gateway
    // dropped for this page (its send buffer was full: the browser did not keep up).
    if (S.lastSeq > 0 && r.seq > S.lastSeq + 1) { S.missed += r.seq - S.lastSeq - 1; dirty.add('health'); }
    S.lastSeq = r.seq;
  }
  if (r.gatewayId && !S.gatewayId) { S.gatewayId = r.gatewayId; $('gateway-id').textContent = r.gatewayId; }
}

function device(id) {
  let d = S.devices.get(id);
  if (!d) {
    d = { id, status: 'online', location: '', lastSeen: null, sensors: new Map() };
    S.devices.set(id, d);
    S.sorted = null;
    dirty.add('device-list');
  }
  return d;
}

function applyReading(r) {
  const d = device(r.deviceId);
  const prev = d.sensors.get(r.sensorType);
  if (!prev) dirty.add('device-list');
  if (!prev || r.seq === undefined || prev.seq === undefined || r.seq > prev.seq) {
    d.sensors.set(r.sensorType, r);
    if (S.visible.has(d.id)) dirty.add('devices');
    if (r.location) d.location = r.location;
    if (!d.lastSeen || r.timestamp > d.lastSeen) d.lastSeen = r.timestamp;
  }
  const t = S.trend;
  if (r.deviceId === t.deviceId && r.sensorType === t.sensorType) {
    if (t.points.has(r.seq)) S.duplicates++; else { t.points.set(r.seq, r); dirty.add('chart'); }
  }
  S.readings++;
  if (S.firstLiveMs === null) S.firstLiveMs = performance.now();
}

function applyStatus(s) {
  const d = device(s.deviceId);
  if (d.statusSeq !== undefined && s.seq !== undefined && s.seq <= d.statusSeq) { S.duplicates++; return; }
  const wentOffline = s.status === 'offline' && d.status !== 'offline';
  d.status = s.status; d.statusSeq = s.seq;
  if (s.location) d.location = s.location;
  if (s.lastSeen) d.lastSeen = s.lastSeen;
  dirty.add('devices');
  if (wentOffline) notify('warning', 'Device Offline', `Device ${s.deviceId} has gone offline`, 5000);
}

function applyAlert(ev, a) {
  const key = a.seq ?? a.alertId;
  if (S.alertSeqs.has(key)) {
    if (ev === 'alert') S.duplicates++;
    return; // `alert:system` repeats an `alert` the page already has.
  }
  S.alertSeqs.add(key);
  S.alerts.unshift(a);
  if (S.alerts.length > MAX_ALERTS) {
    const old = S.alerts.pop();
    S.alertSeqs.delete(old.seq ?? old.alertId);
  }
  dirty.add('alerts');
  if (ev === 'alert') {
    notify(a.severity === 'critical' ? 'error' : 'warning', 'Alert Triggered',
      `${a.deviceId ?? 'gateway'}: ${a.message}`, a.severity === 'critical' ? 0 : 10000);
  } else {
    notify('error', 'System Alert', a.message, 0);
  }
}

function applyAlarm(a) {
  // `get:alarms` answered with the state as of its `seq`: older transitions are in it.
  if (S.alarmsSeq !== null && a.seq !== undefined && a.seq <= S.alarmsSeq) return;
  const prev = S.alarms.get(a.alarmId);
  if (prev && prev.seq !== undefined && a.seq !== undefined && a.seq <= prev.seq) { S.duplicates++; return; }
  S.alarms.set(a.alarmId, a);
  dirty.add('alarms');
}

function flush() {
  const batch = queue;
  queue = [];
  for (const [ev, r] of batch) {
    if (!r || typeof r !== 'object') continue;
    seen(r);
    if (ev === 'sensor:all') applyReading(r);
    else if (ev === 'device:all') applyStatus(r);
    else if (ev === 'alarm:state') applyAlarm(r);
    else applyAlert(ev, r);
  }
  render();
}
setInterval(flush, TICK_MS);
setInterval(() => dirty.add('devices'), 5000); // "last seen" ages

// ---- notifications ----------------------------------------------------------------------

function notify(type, title, message, autoCloseMs) {
  S.notifications.unshift({ type, title, message, at: new Date().toISOString() });
  S.notifications.length = Math.min(S.notifications.length, 50);
  const box = $('toasts');
  const el = document.createElement('div');
  el.className = `toast ${type}`;
  el.innerHTML = `<b>${esc(title)}</b>${esc(message)}`;
  el.onclick = () => el.remove();
  box.prepend(el);
  while (box.children.length > MAX_TOASTS) box.lastChild.remove();
  if (autoCloseMs) setTimeout(() => el.remove(), autoCloseMs);
}

// ---- rendering --------------------------------------------------------------------------

function render() {
  if (dirty.has('device-list')) renderTrendPickers();
  if (dirty.has('devices') || dirty.has('device-list')) renderDevices();
  if (dirty.has('chart')) renderChart();
  if (dirty.has('alerts')) renderAlerts();
  if (dirty.has('alarms')) renderAlarms();
  if (dirty.has('health')) renderHealth();
  dirty.clear();
}

function ago(ts) {
  if (!ts) return '—';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago` : new Date(ts).toLocaleString();
}

function fmt(v) {
  return typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(2)) : esc(v);
}

function visibleDevices() {
  const f = S.filter.toLowerCase();
  if (!S.sorted) S.sorted = [...S.devices.values()].sort((a, b) => byId(a.id, b.id));
  if (!f && !S.statusFilter) return S.sorted;
  const out = [];
  for (const d of S.sorted) {
    if (S.statusFilter && d.status !== S.statusFilter) continue;
    if (f && !d.id.toLowerCase().includes(f) && !d.location.toLowerCase().includes(f)
      && ![...d.sensors.keys()].some((k) => k.toLowerCase().includes(f))) continue;
    out.push(d);
  }
  return out;
}

function renderDevices() {
  const list = visibleDevices();
  const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
  S.page = Math.min(S.page, pages - 1);
  const t = S.trend;
  const shown = list.slice(S.page * PAGE_SIZE, (S.page + 1) * PAGE_SIZE);
  S.visible = new Set(shown.map((d) => d.id));
  const rows = shown.map((d) => {
    const chips = [...d.sensors.values()].map((r) =>
      `<span class="chip ${esc(r.status)}${d.id === t.deviceId && r.sensorType === t.sensorType ? ' selected' : ''}" data-d="${esc(d.id)}" data-s="${esc(r.sensorType)}" title="${esc(r.timestamp)}">${esc(r.sensorType)} <b>${fmt(r.value)}</b> ${esc(r.unit)}</span>`).join('');
    return `<tr data-id="${esc(d.id)}"><td>${esc(d.id)}<span class="sub">${esc(d.location)} · ${ago(d.lastSeen)}</span></td><td><span class="st ${esc(d.status)}">${esc(d.status)}</span></td><td>${esc(d.location)}</td><td>${ago(d.lastSeen)}</td><td>${chips}</td></tr>`;
  });
  document.querySelector('#devices tbody').innerHTML = rows.join('');
  $('page').textContent = ` ${S.page + 1} / ${pages} `;
  $('device-count').textContent = `${list.length} of ${S.devices.size}`;
}

$('filter').oninput = (e) => { S.filter = e.target.value; S.page = 0; dirty.add('devices'); };
$('status-filter').onchange = (e) => { S.statusFilter = e.target.value; S.page = 0; dirty.add('devices'); };
$('prev').onclick = () => { S.page = Math.max(0, S.page - 1); dirty.add('devices'); };
$('next').onclick = () => { S.page++; dirty.add('devices'); };
document.querySelector('#devices tbody').onclick = (e) => {
  const chip = e.target.closest('.chip');
  if (chip) selectTrend(chip.dataset.d, chip.dataset.s);
};

function renderAlerts() {
  $('alerts').innerHTML = S.alerts.slice(0, 30).map((a) =>
    `<li><span class="sev-${esc(a.severity)}">${esc(a.severity)}</span> ${esc(a.deviceId ?? 'gateway')}: ${esc(a.message)} <span class="muted">${esc(new Date(a.timestamp).toLocaleTimeString())}</span></li>`).join('');
}

function renderHealth() {
  const s = S.status, h = S.health;
  const status = (h && h.status) || (s && s.status) || '';
  $('health-status').textContent = status;
  $('health-status').className = `badge ${esc(status)}`;
  const m = (s && s.metrics) || {};
  const fig = [
    ['readings / min', m.dataPointsPerMinute], ['devices online', m.activeDevices !== undefined ? `${m.activeDevices} / ${m.totalDevices}` : h && `${h.devices.online} / ${h.devices.total}`],
    ['active alerts', m.activeAlerts], ['clients', h && h.components.socketio.clients],
    ['store', h && h.components.store.bytes !== undefined ? `${(h.components.store.bytes / 1048576).toFixed(1)} MiB` : undefined],
    ['uptime', (h || s) ? `${Math.round(((h || s).uptime || 0) / 60)} min` : undefined],
    ['missed by this page', S.missed || undefined],
  ];
  $('health-figures').innerHTML = fig.filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join('');
  const rows = [];
  const services = (s && s.services) || {};
  const comps = h ? h.components : {};
  for (const name of ['store', 'mqtt']) {
    const st = (comps[name] && comps[name].status) || services[name];
    if (st) rows.push([name, st, name === 'store' && comps.store && comps.store.error ? comps.store.error : '']);
  }
  const sinks = (comps.sinks) || {};
  for (const [name, k] of Object.entries(sinks)) {
    rows.push([`sink ${name}`, k.status, `lag ${k.lagRecords} records / ${Number(k.lagSeconds).toFixed(1)} s, ${k.sentPerSecond}/s${k.error ? `, ${k.error}` : ''}`]);
  }
  for (const [name, st] of Object.entries(services)) {
    if (!['store', 'mqtt', 'websocket-service'].includes(name) && !Object.keys(sinks).some((k) => name.includes(k))) rows.push([name, st, '']);
  }
  document.querySelector('#services tbody').innerHTML = rows.map(([n, st, d]) =>
    `<tr><td>${esc(n)}</td><td><span class="st ${esc(st)}">${esc(st)}</span></td><td>${esc(d)}</td></tr>`).join('');
}

async function pollHealth() {
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const res = await fetch('/health', { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (res.status === 200 || res.status === 503) { S.health = await res.json(); dirty.add('health'); }
  } catch { /* the connection state already says the gateway is away */ }
}
pollHealth();
setInterval(pollHealth, 5000);

// ---- trend ------------------------------------------------------------------------------

let chart = null;

function renderTrendPickers() {
  const devSel = $('trend-device');
  const ids = [...S.devices.keys()].sort(byId);
  if (devSel.options.length !== ids.length + 1) {
    devSel.innerHTML = '<option value="">device…</option>' + ids.map((id) => `<option>${esc(id)}</option>`).join('');
    devSel.value = S.trend.deviceId ?? '';
  }
  const d = S.devices.get(devSel.value);
  const types = d ? [...d.sensors.keys()].sort() : [];
  const senSel = $('trend-sensor');
  if (senSel.options.length !== types.length + 1 || senSel.dataset.d !== devSel.value) {
    senSel.innerHTML = '<option value="">sensor…</option>' + types.map((t) => `<option>${esc(t)}</option>`).join('');
    senSel.dataset.d = devSel.value;
    senSel.value = devSel.value === S.trend.deviceId ? (S.trend.sensorType ?? '') : '';
  }
}
$('trend-device').onchange = () => { dirty.add('device-list'); render(); };
$('trend-sensor').onchange = (e) => { if (e.target.value) selectTrend($('trend-device').value, e.target.value); };

function selectTrend(deviceId, sensorType) {
  S.trend = { deviceId, sensorType, points: new Map(), historyLoaded: false, historyCount: 0 };
  const r = S.devices.get(deviceId)?.sensors.get(sensorType);
  if (r && r.seq !== undefined) S.trend.points.set(r.seq, r);
  $('trend-device').value = deviceId;
  dirty.add('device-list'); dirty.add('devices'); dirty.add('chart');
  render();
  $('trend-sensor').value = sensorType;
  loadHistory();
}

function loadHistory() {
  const t = S.trend;
  const params = { deviceId: t.deviceId, sensorType: t.sensorType, from: new Date(Date.now() - HOUR_MS).toISOString(), limit: 10000 };
  socket.timeout(15000).emit('get:history', params, (err, res) => {
    if (S.trend !== t) return;
    if (err || !res || !res.success) { $('trend-info').textContent = `history unavailable: ${err ? err.message : res && res.error}`; return; }
    for (const r of res.data) if (r.seq !== undefined && !t.points.has(r.seq)) t.points.set(r.seq, r);
    t.historyLoaded = true; t.historyCount = res.data.length;
    dirty.add('chart');
  });
}

function series() {
  const cutoff = Date.now() - HOUR_MS;
  const pts = [];
  for (const r of S.trend.points.values()) {
    const ts = Date.parse(r.timestamp);
    if (ts >= cutoff) pts.push([ts / 1000, r.value]);
  }
  pts.sort((a, b) => a[0] - b[0]);
  return [pts.map((p) => p[0]), pts.map((p) => p[1])];
}

function renderChart() {
  const t = S.trend;
  if (!t.deviceId) return;
  const data = series();
  const unit = S.devices.get(t.deviceId)?.sensors.get(t.sensorType)?.unit ?? '';
  $('trend-info').textContent = `${data[0].length} points, last hour${t.historyLoaded ? '' : ' (loading history…)'}`;
  const el = $('chart');
  const width = el.clientWidth || 600;
  const height = Math.max(220, Math.min(420, Math.round(width * 0.4)));
  if (chart && chart.series[1].label === `${t.deviceId} ${t.sensorType} (${unit})`) {
    chart.setData(data);
    return;
  }
  if (chart) chart.destroy();
  chart = new uPlot({
    width, height,
    scales: { x: { time: true } },
    series: [{}, { label: `${t.deviceId} ${t.sensorType} (${unit})`, stroke: '#1d4ed8', width: 1.5, points: { show: false } }],
    axes: [{ stroke: '#888' }, { stroke: '#888' }],
  }, data, el);
}
new ResizeObserver(() => {
  if (chart) chart.setSize({ width: $('chart').clientWidth, height: chart.height });
}).observe($('chart'));

// ---- alarms (the alarm API; the panel stays hidden where the gateway has none) -----------

function loadAlarms() {
  socket.timeout(5000).emit('get:alarms', {}, (err, res) => {
    if (err || !res || !res.success || !Array.isArray(res.data)) {
      S.alarmsAvailable = false;
      $('alarms-panel').hidden = true;
      return;
    }
    S.alarmsAvailable = true;
    S.alarmsSeq = res.seq ?? null;
    S.alarms = new Map(res.data.map((a) => [a.alarmId, a]));
    $('alarms-panel').hidden = false;
    dirty.add('alarms');
  });
}

const unacked = (st) => /unack/.test(st || '');

function renderAlarms() {
  const list = [...S.alarms.values()].filter((a) => a.state !== 'normal')
    .sort((a, b) => Number(unacked(b.state)) - Number(unacked(a.state)) || String(b.timestamp).localeCompare(String(a.timestamp)));
  document.querySelector('#alarms tbody').innerHTML = list.map((a) => {
    const id = esc(a.alarmId);
    const acts = [];
    if (unacked(a.state)) acts.push(`<button data-act="ack" data-id="${id}">Ack</button>`);
    if (a.state === 'shelved') acts.push(`<button data-act="unshelve" data-id="${id}">Unshelve</button>`);
    else if (a.state !== 'out_of_service') acts.push(`<button data-act="shelve" data-id="${id}">Shelve</button>`);
    return `<tr><td>${esc(a.deviceId)} ${esc(a.sensorType)}<br><span class="muted">${esc(a.message ?? a.alarmId)}</span></td><td>${esc(a.state)}</td><td class="sev-${esc(a.severity)}">${esc(a.severity)}</td><td>${acts.join(' ')}</td></tr>`;
  }).join('') || '<tr><td colspan="4" class="muted">no active alarms</td></tr>';
}

document.querySelector('#alarms tbody').onclick = (e) => {
  const b = e.target.closest('button');
  if (!b) return;
  const alarmId = b.dataset.id;
  let payload = { alarmId };
  if (b.dataset.act === 'shelve') {
    const minutes = Number(prompt('Shelve for how many minutes?', '60'));
    const reason = prompt('Reason for shelving', '') ?? '';
    if (!minutes) return;
    payload = { alarmId, minutes, reason };
  }
  alarmAction(b.dataset.act, payload);
};

function alarmAction(act, payload) {
  return new Promise((resolve) => socket.timeout(5000).emit(`alarm:${act}`, payload, (err, res) => {
    if (err || !res || !res.success) notify('error', `Alarm ${act} failed`, err ? err.message : (res && (res.error || res.message)), 8000);
    resolve(err ? { success: false, error: err.message } : res);
  }));
}

// ---- what the tests read ----------------------------------------------------------------

window.__dashboard = Object.freeze({
  snapshot: () => ({
    conn: S.conn, transport: socket.io.engine && socket.io.engine.transport ? socket.io.engine.transport.name : null, gatewayId: S.gatewayId, lastSeq: S.lastSeq, duplicates: S.duplicates, missed: S.missed, readings: S.readings,
    firstLiveMs: S.firstLiveMs, truncated: S.truncated, alarmsAvailable: S.alarmsAvailable,
    devices: [...S.devices.values()].map((d) => ({ id: d.id, status: d.status, location: d.location, lastSeen: d.lastSeen,
      sensors: Object.fromEntries([...d.sensors].map(([k, r]) => [k, { value: r.value, unit: r.unit, status: r.status, seq: r.seq }])) })),
    alerts: S.alerts.map((a) => ({ alertId: a.alertId, deviceId: a.deviceId, severity: a.severity, seq: a.seq, message: a.message })),
    alarms: [...S.alarms.values()],
    notifications: S.notifications.slice(),
    status: S.status, health: S.health,
    shownRows: document.querySelectorAll('#devices tbody tr').length,
  }),
  trend: () => {
    const t = S.trend;
    return { deviceId: t.deviceId, sensorType: t.sensorType, historyLoaded: t.historyLoaded, historyCount: t.historyCount,
      seqs: [...t.points.keys()].sort((a, b) => a - b), chartPoints: chart ? chart.data[0].length : 0 };
  },
});
