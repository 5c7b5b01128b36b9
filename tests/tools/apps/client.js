// A Node client with the application's own idle timer (tests/src/apps.rs): net.connect,
// socket.setTimeout(1000), and destroy() when it fires (libuv then closes the fd: close).
//   node client.js connect HOST PORT   times out connecting (the SYN is never answered)
//   node client.js read HOST PORT      writes a request, times out waiting for the answer
// Prints one JSON line: the outcome, its pid, the time it took.
'use strict';
const net = require('net');

const [mode, host, port] = process.argv.slice(2);
const start = process.hrtime.bigint();
const report = (o) => {
  o.pid = process.pid;
  o.elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(JSON.stringify(o) + '\n');
};
const sock = net.connect({ host, port: Number(port) });
let connected = false;
sock.setTimeout(1000);
sock.on('connect', () => {
  connected = true;
  if (mode === 'read') sock.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
});
sock.on('data', () => {
  report({ outcome: 'answered', connected });
  sock.destroy();
});
sock.on('timeout', () => {
  report({ outcome: 'timeout', connected });
  sock.destroy();
});
sock.on('error', (e) => report({ outcome: 'error', code: e.code, connected }));
