// Copies the browser libraries the built-in dashboard embeds from this package's pinned npm
// dependencies into dashboard/vendor/ (run `npm ci && npm run vendor` after bumping them).
// The files are copied as published, minus the sourceMappingURL comment (the maps are not
// embedded, so a browser's developer tools would ask for a file the gateway does not have).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const out = path.join(__dirname, '..', '..', 'dashboard', 'vendor');
const files = [
  ['socket.io-client/dist/socket.io.min.js', 'socket.io.min.js'],
  ['socket.io-client/dist/socket.io.js', 'socket.io.js'],
  ['socket.io-client/LICENSE', 'LICENSE.socket.io-client'],
  ['uplot/dist/uPlot.iife.min.js', 'uPlot.iife.min.js'],
  ['uplot/dist/uPlot.min.css', 'uPlot.min.css'],
  ['uplot/LICENSE', 'LICENSE.uplot'],
];
fs.mkdirSync(out, { recursive: true });
for (const [from, to] of files) {
  const src = path.join(__dirname, 'node_modules', from);
  const text = fs.readFileSync(src, 'utf8').replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, '\n');
  fs.writeFileSync(path.join(out, to), text);
  console.log(`${from} -> dashboard/vendor/${to}`);
}
