// A revisioned HTTP service for canary and load tests: every answer the app itself sends
// carries `x-app: canary` and `x-rev: <REVISION>` (so a test can tell the app's own 5xx from a proxy's),
// `FAIL_RATIO` (0..1) of the requests to anything but /health answer 500, `DELAY_MS`
// delays every answer. Quiet (no per-request log lines), so load tests stay cheap.
const http = require('http');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const revision = process.env.REVISION || '1';
const failRatio = Number(process.env.FAIL_RATIO || 0);
const delay = Number(process.env.DELAY_MS || 0);
const server = http.createServer((req, res) => {
  const answer = () => {
    const fail = req.url !== '/health' && Math.random() < failRatio;
    res.writeHead(fail ? 500 : 200, { 'content-type': 'text/plain', 'x-app': 'canary', 'x-rev': revision });
    res.end(fail ? 'failing on purpose\n' : `revision ${revision} pid ${process.pid}\n`);
  };
  if (delay > 0) setTimeout(answer, delay); else answer();
});
server.keepAliveTimeout = 30000;
server.listen(port, host, () => {
  console.log(`canary app revision ${revision} listening on http://${host}:${port} pid ${process.pid}`);
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
