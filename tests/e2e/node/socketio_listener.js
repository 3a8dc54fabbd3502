#!/usr/bin/env node
// A Socket.IO server behind @socket.io/redis-adapter plus one socket.io-client per user.
// Prints one JSON line per event a client receives; `{"ready": true, "port": N}` once listening.
//
//   node socketio_listener.js --redis redis://127.0.0.1:6379/13 --key socket.io --users u1,u2
// With --sentinels host:port,host:port (and --sentinel-master, default mymaster), ioredis asks
// the Sentinels for the primary (the URL gives the db and password) and follows a failover.
"use strict";

const { once } = require("node:events");
const http = require("node:http");
const { parseArgs } = require("node:util");

const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");
const { Server } = require("socket.io");
const { io: connectClient } = require("socket.io-client");

const { values: args } = parseArgs({
  options: {
    redis: { type: "string", default: "redis://127.0.0.1:6379" },
    key: { type: "string", default: "socket.io" },
    users: { type: "string", default: "" },
    sentinels: { type: "string", default: "" },
    "sentinel-master": { type: "string", default: "mymaster" },
  },
});
const users = args.users.split(",").filter(Boolean);

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const sentinels = args.sentinels
  .split(",")
  .filter(Boolean)
  .map((hostPort) => {
    const at = hostPort.lastIndexOf(":");
    return { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
  });
const pubClient = new Redis(
  args.redis,
  sentinels.length ? { sentinels, name: args["sentinel-master"] } : {},
);
const subClient = pubClient.duplicate();
for (const client of [pubClient, subClient]) {
  client.on("error", (err) => process.stderr.write(`redis error: ${err.message}\n`));
}

const httpServer = http.createServer();
let io = null;

function whenReady(client) {
  return client.status === "ready" ? Promise.resolve() : once(client, "ready");
}

const clients = [];
let stopping = false;

async function stop(code) {
  if (stopping) return;
  stopping = true;
  for (const client of clients) client.disconnect();
  if (io) await new Promise((resolve) => io.close(() => resolve()));
  await Promise.allSettled([pubClient.quit(), subClient.quit()]);
  process.exit(code);
}

function connectUser(port, user) {
  const client = connectClient(`http://127.0.0.1:${port}`, {
    auth: { userId: user },
    transports: ["websocket"],
    reconnection: false,
  });
  clients.push(client);
  client.onAny((event, ...payload) => {
    print({ user, event, data: payload.length === 1 ? payload[0] : payload });
  });
  return new Promise((resolve, reject) => {
    client.once("connect", resolve);
    client.once("connect_error", (err) => reject(new Error(`${user}: ${err.message}`)));
  });
}

async function main() {
  // The adapter subscribes as soon as it exists; on a client still running its ready check
  // (INFO), that subscription makes the check fail, so the clients must be ready first.
  await Promise.all([whenReady(pubClient), whenReady(subClient)]);
  io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient, { key: args.key }) });
  io.on("connection", (socket) => {
    socket.join(`user:${socket.handshake.auth.userId}`);
  });
  httpServer.listen(0, "127.0.0.1");
  await once(httpServer, "listening");
  const { port } = httpServer.address();

  // The adapter fires its PSUBSCRIBE without awaiting it; Redis answers commands on one
  // connection in order, so once this repeat is acknowledged the adapter's pattern is live.
  await subClient.psubscribe(`${args.key}#/#*`);

  await Promise.all(users.map((user) => connectUser(port, user)));
  const rooms = io.of("/").adapter.rooms;
  for (const user of users) {
    if (!rooms.has(`user:${user}`)) throw new Error(`room user:${user} was not joined`);
  }
  print({ ready: true, port });
}

process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));
process.stdin.on("end", () => stop(0));
process.stdin.on("error", () => stop(0));
process.stdin.resume();

main().catch((err) => {
  process.stderr.write(`socketio_listener failed: ${err.stack || err}\n`);
  stop(1);
});
