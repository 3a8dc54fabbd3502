#!/usr/bin/env node
// The benchmark's NestJS side: a BullMQ producer (Queue.add, as @nestjs/bullmq does) and a
// Socket.IO server behind @socket.io/redis-adapter with a few socket.io-clients, in one
// process, so every timestamp below comes from the same clock. The jobs are spread over
// thousands of users (round robin from `userOffset`, so the per-user quota refuses none); rather
// than one client per user, each of `clients` sockets is joined to the `user:<id>` rooms of its
// slice of `users` (the handshake carries the slice), so receiving stays cheap.
//
// Input: one JSON line on stdin (the spec, see `defaults`). Output on stdout: JSON lines
//   {"ready": true}                      the clients are in their rooms; adding starts now
//   {"phase": "measure", "t": <s>}       the warm-up is over; the measured window starts
//   {"phase": "drain", "t": <s>}         the window is over; no more adds, waiting for the rest
//   {"phase": "done", ...counts}         everything is written to spec.out
// spec.out gets {adds: [[bullmqId, tBeforeAdd, tAfterAdd], ...], events: [[event, jobId, seq,
// t, conversationId], ...], meta}. Times are Unix seconds (float, sub-millisecond).
//
// Modes: "open" adds `rate` jobs a second whatever happens (open loop, the arrival rate NestJS
// would impose); "closed" keeps `inFlight` jobs between Queue.add and their completion event.
// Both stop adding early when more than `maxBacklog` jobs are unfinished (an overloaded system).
"use strict";

const path = require("node:path");
const fs = require("node:fs");
const http = require("node:http");
const { once } = require("node:events");
const { performance } = require("node:perf_hooks");

const NODE_MODULES = process.env.BENCH_NODE_MODULES ||
  path.resolve(__dirname, "..", "tests", "e2e", "node", "node_modules");
const need = (name) => require(path.join(NODE_MODULES, name));
const { Queue } = need("bullmq");
const Redis = need("ioredis");
const { Server } = need("socket.io");
const { createAdapter } = need("@socket.io/redis-adapter");
const { io: connectClient } = need("socket.io-client");

const defaults = {
  redis: "redis://127.0.0.1:6379/14",
  prefix: "bull",
  queue: "vamu-ai",
  socketioKey: "socket.io",
  users: ["u-ada", "u-bruno", "u-chioma", "u-dev"],
  userOffset: 0, // the first job goes to users[userOffset % users.length]
  clients: 4, // socket.io-clients; each joins the rooms of a slice of `users`
  kind: "inspiration", // or "chat"
  tag: "run",
  mode: "closed",
  rate: 100,
  inFlight: 50,
  warmupS: 2,
  durationS: 10,
  drainS: 30,
  maxBacklog: 5000,
  out: "driver-out.json",
};

const DONE_EVENTS = {
  inspiration: new Set(["inspiration-ready", "ai-job-failed"]),
  chat: new Set(["chat-reply-ready", "ai-job-failed"]),
};

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function readSpec() {
  let buf = "";
  for await (const chunk of process.stdin) {
    buf += chunk;
    const nl = buf.indexOf("\n");
    if (nl >= 0) return { ...defaults, ...JSON.parse(buf.slice(0, nl)) };
  }
  return { ...defaults, ...JSON.parse(buf) };
}

function whenReady(client) {
  return client.status === "ready" ? Promise.resolve() : once(client, "ready");
}

async function main() {
  const spec = await readSpec();
  const done = DONE_EVENTS[spec.kind];
  const pub = new Redis(spec.redis);
  const sub = pub.duplicate();
  const producerConn = new Redis(spec.redis, { maxRetriesPerRequest: null });
  for (const c of [pub, sub, producerConn]) c.on("error", (e) => process.stderr.write(`redis: ${e.message}\n`));
  await Promise.all([whenReady(pub), whenReady(sub), whenReady(producerConn)]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub, { key: spec.socketioKey }) });
  io.on("connection", (socket) => {
    const userIds = socket.handshake.auth.userIds;
    if (Array.isArray(userIds)) socket.join(userIds.map((id) => `user:${id}`));
  });
  httpServer.listen(0, "127.0.0.1");
  await once(httpServer, "listening");
  const { port } = httpServer.address();
  // The adapter's PSUBSCRIBE is fired without being awaited; a repeat on the same connection
  // is answered after it, so once this resolves the adapter hears the emitter.
  await sub.psubscribe(`${spec.socketioKey}#/#*`);

  const events = [];
  let completed = 0;
  let onComplete = () => {};
  const clients = [];
  const nClients = Math.max(1, Math.min(spec.clients, spec.users.length));
  const slices = Array.from({ length: nClients }, (_, i) =>
    spec.users.filter((_, n) => n % nClients === i));
  await Promise.all(slices.map((userIds, i) => new Promise((resolve, reject) => {
    const client = connectClient(`http://127.0.0.1:${port}`, {
      auth: { userIds }, transports: ["websocket"], reconnection: false,
    });
    clients.push(client);
    client.onAny((event, data) => {
      const t = now();
      const d = data || {};
      events.push([event, d.jobId || null, d.seq === undefined ? null : d.seq, t,
        d.conversationId || null]);
      if (done.has(event)) {
        completed += 1;
        onComplete();
      }
    });
    client.once("connect", resolve);
    client.once("connect_error", (err) => reject(new Error(`client ${i}: ${err.message}`)));
  })));

  const queue = new Queue(spec.queue, { connection: producerConn, prefix: spec.prefix });
  await queue.waitUntilReady();
  const adds = [];
  let added = 0;
  let addErrors = 0;
  let seq = 0;
  const jobFor = (n) => {
    const userId = spec.users[(spec.userOffset + n) % spec.users.length];
    if (spec.kind === "chat") {
      const conversationId = `bench-${spec.tag}-${n}`;
      return ["chatbot.reply", { userId, conversationId,
        message: `[bench:${conversationId}] Anything with live jazz near me this week?` }];
    }
    return ["inspiration.generate", { userId, count: 3, locale: "en-GB", hint: "live music" }];
  };
  const addOne = () => {
    const n = seq++;
    const [name, data] = jobFor(n);
    const t0 = now();
    added += 1;
    // removeOnComplete keeps Redis small over a long run; the bench reads no BullMQ results.
    queue.add(name, data, { removeOnComplete: true, removeOnFail: 1000 }).then(
      (job) => adds.push([job.id, t0, now()]),
      (err) => { addErrors += 1; process.stderr.write(`add failed: ${err.message}\n`); },
    );
  };

  print({ ready: true, port });
  const start = now();
  const measureAt = start + spec.warmupS;
  const drainAt = measureAt + spec.durationS;
  let phase = "warmup";
  let overloadedAt = null;
  const backlog = () => added - completed;
  const adding = () => phase !== "drain" && overloadedAt === null;

  let measuredAt = null;
  let drainedAt = null;
  const tick = () => {
    const t = now();
    if (phase === "warmup" && t >= measureAt) { phase = "measure"; measuredAt = t; print({ phase, t }); }
    if (phase === "measure" && t >= drainAt) {
      phase = "drain"; drainedAt = t; print({ phase, t, reason: "duration" });
    }
    if (adding() && backlog() > spec.maxBacklog) {
      // Overloaded: the window ends here, so it measures what the system kept up with.
      overloadedAt = t;
      if (phase === "warmup") { measuredAt = t; print({ phase: "measure", t }); }
      phase = "drain"; drainedAt = t;
      print({ phase, t, reason: "overloaded", backlog: backlog() });
    }
  };

  if (spec.mode === "closed") {
    onComplete = () => { tick(); if (adding() && backlog() < spec.inFlight) addOne(); };
    for (let i = 0; i < spec.inFlight; i++) addOne();
    while (phase !== "drain") { await sleep(5); tick(); }
  } else {
    // Open loop: catch up to `rate * elapsed` every few ms, so a stalled event loop does not
    // lower the offered rate (the real add time is what is recorded).
    while (phase !== "drain") {
      tick();
      if (adding()) {
        const due = Math.floor((now() - start) * spec.rate);
        while (seq < due) addOne();
      }
      await sleep(2);
    }
  }
  const drainUntil = now() + spec.drainS;
  while (backlog() > 0 && now() < drainUntil) await sleep(20);
  // Late adds resolve before we write: give pending Queue.add promises a moment.
  const settleUntil = now() + 2;
  while (adds.length + addErrors < added && now() < settleUntil) await sleep(10);

  const meta = { start, measureAt: measuredAt, drainAt: drainedAt, end: now(), added, completed, addErrors, overloadedAt,
    unfinished: backlog(), mode: spec.mode, rate: spec.rate, inFlight: spec.inFlight };
  fs.writeFileSync(spec.out, JSON.stringify({ adds, events, meta }));
  print({ phase: "done", ...meta });

  for (const c of clients) c.disconnect();
  await queue.close();
  await new Promise((resolve) => io.close(() => resolve()));
  await Promise.allSettled([pub.quit(), sub.quit(), producerConn.quit()]);
  process.exit(0);
}

process.on("SIGTERM", () => process.exit(143));
process.on("SIGINT", () => process.exit(130));
main().catch((err) => {
  process.stderr.write(`driver failed: ${err && err.stack || err}\n`);
  process.exit(1);
});
