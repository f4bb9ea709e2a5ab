// A minimal HTTP service: GET /health answers 200, everything else "hello".
const http = require('http');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
let healthy = true;
const server = http.createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  if (req.url === '/health') {
    res.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain' });
    res.end(healthy ? 'ok' : 'unhealthy');
  } else if (req.url === '/toggle-health') {
    healthy = !healthy;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`healthy: ${healthy}`);
  } else if (req.url === '/fail') {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end('failing on purpose');
  } else {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`hello from ${process.pid}\n`);
  }
});
server.listen(port, host, () => {
  console.log(`hello listening on http://${host}:${port} pid ${process.pid}`);
});
process.on('SIGTERM', () => {
  console.log('hello: SIGTERM received, shutting down');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 200).unref();
});
