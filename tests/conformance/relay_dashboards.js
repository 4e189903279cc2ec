// A peer of tests/relay.rs: dashboards (socket.io-client v4 websocket and polling, v2 websocket
// and polling) behind HAProxy in front of relay replicas. Each subscribes to all devices,
// keeps the last seq it saw per gateway, and on a reconnect resumes with that map
// (v4: auth.after, v2: the `after` query parameter as JSON). Writes <dir>/ready once every
// client is connected and has had a reading; on <dir>/stop writes <dir>/result.json and exits.
//   node relay_dashboards.js <url> <clients per flavor> <dir>
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const ioV4 = require('socket.io-client');
const ioV2 = require('socket.io-client-v2');

const [url, perFlavor, dir] = process.argv.slice(2);
const FLAVORS = [
  { name: 'v4-websocket', version: 4, transports: ['websocket'] },
  { name: 'v4-polling', version: 4, transports: ['polling'] },
  { name: 'v2-websocket', version: 2, transports: ['websocket'] },
  { name: 'v2-polling', version: 2, transports: ['polling'] },
];

function dashboard(flavor, i) {
  const name = `${flavor.name}-${i}`;
  const d = { name, flavor: flavor.name, seen: {}, last: {}, duplicates: 0, connects: 0, resumes: 0, servers: [] };
  const opts = {
    transports: flavor.transports,
    forceNew: true,
    reconnection: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
    timeout: 5000,
    query: { dashboard: name },
  };
  let socket;
  if (flavor.version === 4) {
    // Read at every (re)connect: the cursor as it is then.
    opts.auth = (cb) => cb(d.connects === 0 ? {} : { after: { ...d.last } });
    socket = ioV4(url, opts);
  } else {
    socket = ioV2(url, opts);
    socket.on('reconnect_attempt', () => {
      socket.io.opts.query = { dashboard: name, after: JSON.stringify(d.last) };
    });
  }
  socket.on('connect', () => {
    d.connects += 1;
    socket.emit('subscribe-all-devices');
  });
  socket.on('resume:done', () => { d.resumes += 1; });
  socket.on('sensor:all', (r) => {
    const gw = r.gatewayId;
    const seen = (d.seen[gw] ||= new Set());
    if (seen.has(r.seq)) {
      d.duplicates += 1;
      return;
    }
    seen.add(r.seq);
    d.last[gw] = Math.max(d.last[gw] || 0, r.seq);
  });
  d.socket = socket;
  return d;
}

const dashboards = [];
for (const flavor of FLAVORS) {
  for (let i = 0; i < Number(perFlavor); i++) dashboards.push(dashboard(flavor, i));
}

const timer = setInterval(() => {
  const ready = dashboards.every((d) => d.connects > 0 && Object.keys(d.seen).length >= 2);
  if (ready && !fs.existsSync(path.join(dir, 'ready'))) fs.writeFileSync(path.join(dir, 'ready'), 'ok');
  if (fs.existsSync(path.join(dir, 'stop'))) {
    clearInterval(timer);
    const result = dashboards.map((d) => ({
      name: d.name,
      connects: d.connects,
      resumes: d.resumes,
      duplicates: d.duplicates,
      seqs: Object.fromEntries(Object.entries(d.seen).map(([gw, s]) => [gw, [...s].sort((a, b) => a - b)])),
    }));
    fs.writeFileSync(path.join(dir, 'result.json'), JSON.stringify(result));
    for (const d of dashboards) d.socket.close();
    process.exit(0);
  }
}, 100);
