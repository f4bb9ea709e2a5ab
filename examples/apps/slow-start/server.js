// Like hello, but only listens after SLOW_START_MS (default 1500 ms).
const http = require('http');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const delay = Number(process.env.SLOW_START_MS || 1500);
console.log(`slow-start: warming up for ${delay} ms`);
setTimeout(() => {
  http.createServer((req, res) => {
    res.writeHead(200);
    res.end('ready');
  }).listen(port, host, () => console.log(`slow-start listening on ${port}`));
}, delay);
