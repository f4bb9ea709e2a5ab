// Writes N numbered lines ("line 0000001" ...) as fast as it can, then calls process.exit(0)
// at once: the last lines are exactly the ones a pipe-reading supervisor loses.
// N comes from argv[2] or BURST_LINES (default 1000).
const n = Number(process.argv[2] || process.env.BURST_LINES || 1000);
const fs = require('fs');
let buf = '';
for (let i = 1; i <= n; i++) {
  buf += 'line ' + String(i).padStart(7, '0') + '\n';
  if (buf.length >= 65536) {
    process.stdout.write(buf);
    buf = '';
  }
}
buf += `burst done: ${n} lines\n`;
process.stdout.write(buf);
process.exit(0);
