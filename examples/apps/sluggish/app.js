// Slow at both ends, so that a fault can land inside an operation: listens only after
// START_DELAY_MS (default 1000 ms), and on SIGTERM closes and exits STOP_DELAY_MS (default
// 800 ms) later. It keeps one child process (CHILD=0: none), which inherits its environment
// and process group, so a stray child shows up when a tree is not cleaned up. CHATTY_MS > 0
// logs a 100-byte line every CHATTY_MS ms. GET /health answers 200.
const http = require('http');
const { spawn } = require('child_process');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const startDelay = Number(process.env.START_DELAY_MS || 1000);
const stopDelay = Number(process.env.STOP_DELAY_MS || 800);
const chatty = Number(process.env.CHATTY_MS || 0);
let child = null;
if (process.env.CHILD !== '0') {
  child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
}
console.log(`sluggish: pid ${process.pid} child ${child ? child.pid : 'none'}, warming up for ${startDelay} ms`);
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(req.url === '/health' ? 'ok' : `sluggish ${process.pid}\n`);
});
setTimeout(() => {
  server.listen(port, host, () => console.log(`sluggish listening on ${port}`));
}, startDelay);
if (chatty > 0) {
  const line = 'x'.repeat(90);
  let n = 0;
  setInterval(() => console.log(`chatty ${n++} ${line}`), chatty);
}
let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  console.log(`sluggish: SIGTERM, exiting in ${stopDelay} ms`);
  server.close();
  setTimeout(() => {
    if (child) child.kill('SIGTERM');
    process.exit(0);
  }, stopDelay);
});
