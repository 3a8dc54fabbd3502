#!/usr/bin/env node
// Emits one event with @socket.io/redis-emitter, the reference for the Python emitter's bytes.
//
//   node emit_node.js --redis URL --key socket.io --room user:u1 --event name --data '{"a":1}'
// --room may be repeated (or left out to broadcast to the whole namespace).
"use strict";

const { parseArgs } = require("node:util");

const { Emitter } = require("@socket.io/redis-emitter");
const Redis = require("ioredis");

const { values: args } = parseArgs({
  options: {
    redis: { type: "string", default: "redis://127.0.0.1:6379" },
    key: { type: "string", default: "socket.io" },
    nsp: { type: "string", default: "/" },
    room: { type: "string", multiple: true, default: [] },
    event: { type: "string" },
    data: { type: "string", default: "{}" },
  },
});

async function main() {
  if (!args.event) throw new Error("--event is required");
  const redis = new Redis(args.redis);
  const emitter = new Emitter(redis, { key: args.key }).of(args.nsp);
  let target = emitter;
  for (const room of args.room) target = target.to(room);
  target.emit(args.event, JSON.parse(args.data));
  // The emitter does not await its PUBLISH; QUIT is answered after it, so the message is out.
  await redis.quit();
}

main().catch((err) => {
  process.stderr.write(`emit_node failed: ${err.stack || err}\n`);
  process.exit(1);
});
