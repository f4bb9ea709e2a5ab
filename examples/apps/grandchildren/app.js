// Spawns two children (which each keep running) and one detached grandchild that moves
// itself into a new session, then serves HTTP. Logs every pid it starts.
const http = require('http');
const { spawn } = require('child_process');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const keepAlive = ['-e', 'setInterval(() => {}, 1000)'];
for (let i = 0; i < 2; i++) {
  const child = spawn(process.execPath, keepAlive, { stdio: 'ignore' });
  console.log(`grandchildren: child pid ${child.pid}`);
}
const detached = spawn(process.execPath, keepAlive, { detached: true, stdio: 'ignore' });
detached.unref();
console.log(`grandchildren: detached pid ${detached.pid}`);
http.createServer((req, res) => {
  res.writeHead(200);
  res.end('ok');
}).listen(port, host, () => console.log(`grandchildren listening on ${port}`));
