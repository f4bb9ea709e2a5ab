// Starts, complains, and exits with CRASH_CODE (default 1) after CRASH_AFTER_MS (default 50 ms).
const code = Number(process.env.CRASH_CODE || 1);
const after = Number(process.env.CRASH_AFTER_MS || 50);
console.log(`crash: starting, pid ${process.pid}`);
setTimeout(() => {
  console.error(`crash: fatal error, exiting with code ${code}`);
  process.exit(code);
}, after);
