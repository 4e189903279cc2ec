// Smoke check used by scripts/qemu-boot-test.sh: connect to a gateway, see simulated readings.
// usage: node smoke.js URL
'use strict';
const io = require('socket.io-client');

const url = process.argv[2];
const socket = io(url, { transports: ['websocket'], reconnection: false, timeout: 20000 });
const fail = (why) => { console.error(`smoke: ${why}`); process.exit(1); };
const timer = setTimeout(() => fail('no sensor:all reading within 60 s'), 60000);
socket.on('connect_error', (e) => fail(`connect_error: ${e.message}`));
socket.on('connect', () => socket.emit('subscribe-all-devices'));
socket.on('sensor:all', (r) => {
  if (typeof r.deviceId === 'string' && r.deviceId.startsWith('sim-device-') && typeof r.value === 'number') {
    console.log(`smoke: sensor:all ${r.deviceId} ${r.sensorType}=${r.value}${r.unit} seq=${r.seq}`);
    clearTimeout(timer);
    socket.close();
    process.exit(0);
  }
});
