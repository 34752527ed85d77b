// The BullMQ peer of `cargo xtask bench queue`: the same workload as the app's queue on the
// same redis-server: JOBS no-op jobs from PRODUCERS concurrent `add` calls, WORKERS worker
// processes (one `Worker` each, like one `app worker` process each) running CONCURRENCY jobs
// at a time. Prints one JSON line: jobs/s from the first add to the last completion, the
// redis-server CPU time used meanwhile, and each job's time from enqueue to done as BullMQ
// records it (job.timestamp at add, job.finishedOn when it was moved to completed; ms).
//
// Guarantees set equal to the app queue's defaults (see app/README.md):
//   attempts ATTEMPTS with exponential backoff from BACKOFF_MS (queue.max_attempts,
//   queue.backoff_base_ms); a stalled job (its worker died) is taken over after LOCK_MS
//   (queue.claim_idle_ms); completed jobs kept RETENTION_S (queue.retention_s); failed jobs
//   (BullMQ's dead letters) kept until removed, like the app's dead-letter stream.
//
// usage: node bench.js PORT JOBS PRODUCERS WORKERS CONCURRENCY ATTEMPTS BACKOFF_MS LOCK_MS RETENTION_S TIMEOUT_S
'use strict';

const { fork } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const NAMES = ['port', 'jobs', 'producers', 'workers', 'concurrency', 'attempts', 'backoffMs',
  'lockMs', 'retentionS', 'timeoutS'];

function parseArgs(argv) {
  if (argv.length !== NAMES.length) {
    throw new Error(`expected ${NAMES.length} arguments (${NAMES.join(' ')}), got ${argv.length}`);
  }
  const a = {};
  NAMES.forEach((n, i) => {
    const v = Number(argv[i]);
    if (!Number.isInteger(v) || v < 1) throw new Error(`${n} must be a positive integer, got ${argv[i]}`);
    a[n] = v;
  });
  return a;
}

const QUEUE = 'bench';

function connection(a) {
  // Workers block on Redis: BullMQ requires maxRetriesPerRequest null.
  return { host: '127.0.0.1', port: a.port, maxRetriesPerRequest: null };
}

// A worker process: runs jobs, counts completions, keeps their latencies.
async function worker(a) {
  let done = 0;
  let sent = 0;
  let latencies = [];
  const w = new Worker(QUEUE, async () => null, {
    connection: connection(a),
    concurrency: a.concurrency,
    lockDuration: a.lockMs,
    stalledInterval: a.lockMs,
  });
  w.on('completed', (job) => {
    done += 1;
    latencies.push(job.finishedOn - job.timestamp);
  });
  w.on('error', (e) => process.send({ error: String(e) }));
  await w.waitUntilReady();
  const tick = setInterval(() => {
    if (done !== sent) {
      sent = done;
      process.send({ done });
    }
  }, 2);
  process.on('message', async (m) => {
    if (m.cmd === 'reset') {
      done = 0;
      sent = 0;
      latencies = [];
      process.send({ reset: true });
    } else if (m.cmd === 'stop') {
      clearInterval(tick);
      await w.close();
      process.send({ stopped: true, latencies }, () => process.exit(0));
    }
  });
  process.send({ ready: true });
}

async function redisCpu(r) {
  const info = await r.info('cpu');
  const f = (k) => Number((info.match(new RegExp(`^${k}:([0-9.]+)`, 'm')) || [])[1] || 0);
  return f('used_cpu_sys') + f('used_cpu_user');
}

// The producer process: starts the workers, warms up, then measures one run.
async function main(a) {
  const children = [];
  const counts = [];
  const waiters = [];
  const fail = (msg) => {
    for (const c of children) c.kill('SIGKILL');
    console.error(msg);
    process.exit(1);
  };
  const deadline = setTimeout(() => fail(`BullMQ run did not finish within ${a.timeoutS} s`), a.timeoutS * 1000);
  const expect = (pred) => (pred() ? Promise.resolve() : new Promise((resolve) => waiters.push({ pred, resolve })));
  const settle = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i].pred()) {
        waiters[i].resolve();
        waiters.splice(i, 1);
      }
    }
  };
  const flags = { ready: 0, reset: 0, stopped: 0 };
  let latencies = [];
  for (let i = 0; i < a.workers; i++) {
    const c = fork(__filename, ['--worker', ...process.argv.slice(2)], { stdio: 'inherit' });
    counts.push(0);
    c.on('message', (m) => {
      if (m.error) fail(`worker ${i}: ${m.error}`);
      if (m.done !== undefined) counts[i] = m.done;
      if (m.ready) flags.ready += 1;
      if (m.reset) { counts[i] = 0; flags.reset += 1; }
      if (m.stopped) { flags.stopped += 1; latencies = latencies.concat(m.latencies); }
      settle();
    });
    c.on('exit', (code) => { if (code !== 0 && flags.stopped < a.workers) fail(`worker ${i} exited with ${code}`); });
    children.push(c);
  }
  await expect(() => flags.ready === a.workers);
  const queue = new Queue(QUEUE, { connection: connection(a) });
  const redis = new IORedis(connection(a));
  const opts = {
    attempts: a.attempts,
    backoff: { type: 'exponential', delay: a.backoffMs },
    removeOnComplete: { age: a.retentionS },
    removeOnFail: false,
  };
  const total = () => counts.reduce((x, y) => x + y, 0);
  const produce = async (n) => {
    let next = 0;
    const one = async () => {
      while (next < n) {
        const i = next++;
        await queue.add('noop', { n: i }, opts);
      }
    };
    await Promise.all(Array.from({ length: Math.min(a.producers, n) }, one));
  };

  // Warm-up: script loading, connections and the JIT, as the app bench's warm-up run does.
  const warm = Math.min(1000, a.jobs);
  await produce(warm);
  await expect(() => total() >= warm);
  for (const c of children) c.send({ cmd: 'reset' });
  await expect(() => flags.reset === a.workers);

  const cpu0 = await redisCpu(redis);
  const t0 = performance.now();
  const producing = produce(a.jobs);
  await expect(() => total() >= a.jobs);
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = await redisCpu(redis);
  await producing;
  for (const c of children) c.send({ cmd: 'stop' });
  await expect(() => flags.stopped === a.workers);
  clearTimeout(deadline);
  await queue.close();
  redis.disconnect();
  process.stdout.write(JSON.stringify({
    jobs: a.jobs,
    seconds,
    jobs_per_s: a.jobs / seconds,
    redis_cpu_s: cpu1 - cpu0,
    latencies_ms: latencies,
  }) + '\n');
}

const worker_mode = process.argv[2] === '--worker';
let args;
try {
  args = parseArgs(process.argv.slice(worker_mode ? 3 : 2));
} catch (e) {
  console.error(`bench.js: ${e.message}`);
  process.exit(2);
}
(worker_mode ? worker(args) : main(args)).catch((e) => {
  console.error(`bench.js: ${e.stack || e}`);
  process.exit(1);
});
