// An HTTP server that ignores SIGTERM: only SIGKILL stops it.
const http = require('http');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
process.on('SIGTERM', () => console.log('ignore-sigterm: got SIGTERM, ignoring it'));
http.createServer((req, res) => {
  res.writeHead(200);
  res.end('still here');
}).listen(port, host, () => console.log(`ignore-sigterm listening on ${port}`));
