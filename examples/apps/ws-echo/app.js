// An HTTP + WebSocket service with no dependencies (node's built-in `http` upgrade), for the
// proxy's tests. Every response the app makes carries `x-app: ws-echo` and `x-rev: $REV`, so a
// client can tell the app's own answers (even its 5xx) from the proxy's.
//   GET /health         200 ok (503 when FAIL_HEALTH is set: a revision that never gets ready)
//   GET /fail           500, on purpose
//   GET /slow?ms=N      answers after N ms
//   POST /echo          echoes the body, streamed
//   GET /headers        the request headers as JSON
//   Upgrade: websocket  echoes text frames, prefixed with the revision ("r2: hello")
const http = require('http');
const crypto = require('crypto');
const port = Number(process.env.PORT || 3000);
const rev = process.env.REV || '?';
// HOST as the providers set it (0.0.0.0 inside a container, so the published port reaches it).
const host = process.env.HOST || '127.0.0.1';
const tag = { 'x-app': 'ws-echo', 'x-rev': rev };

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/health') {
    const ok = !process.env.FAIL_HEALTH;
    res.writeHead(ok ? 200 : 503, { ...tag, 'content-type': 'text/plain' });
    res.end(ok ? 'ok' : 'never ready');
  } else if (url.pathname === '/fail') {
    res.writeHead(500, { ...tag, 'content-type': 'text/plain' });
    res.end('failing on purpose');
  } else if (url.pathname === '/slow') {
    setTimeout(() => {
      res.writeHead(200, { ...tag, 'content-type': 'text/plain' });
      res.end(`slow ${rev}\n`);
    }, Number(url.searchParams.get('ms') || 1000));
  } else if (url.pathname === '/echo') {
    res.writeHead(200, { ...tag, 'content-type': 'application/octet-stream' });
    req.pipe(res);
  } else if (url.pathname === '/headers') {
    res.writeHead(200, { ...tag, 'content-type': 'application/json' });
    res.end(JSON.stringify(req.headers));
  } else {
    res.writeHead(200, { ...tag, 'content-type': 'text/plain' });
    res.end(`hello from ${rev} pid ${process.pid}\n`);
  }
});

server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if ((req.headers.upgrade || '').toLowerCase() !== 'websocket' || !key) {
    socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    return;
  }
  const accept = crypto.createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\nx-app: ws-echo\r\nx-rev: ${rev}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    // Short masked frames only (payload < 126 bytes), which is what the tests send.
    while (buf.length >= 6) {
      const opcode = buf[0] & 0x0f;
      const len = buf[1] & 0x7f;
      if (buf.length < 6 + len) break;
      const mask = buf.subarray(2, 6);
      const data = Buffer.from(buf.subarray(6, 6 + len)).map((b, i) => b ^ mask[i % 4]);
      buf = buf.subarray(6 + len);
      if (opcode === 8) { socket.end(Buffer.from([0x88, 0])); return; }
      const reply = Buffer.from(`${rev}: ${data.toString()}`);
      socket.write(Buffer.concat([Buffer.from([0x81, reply.length]), reply]));
    }
  });
  socket.on('error', () => {});
});

server.keepAliveTimeout = 65000;
server.listen(port, host, () => console.log(`ws-echo ${rev} listening on ${port}`));
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
});
