// The chat replay stream `vamu:chat:{jobId}` (docs/contracts.md, "Streaming a chat reply").
import type { ChatChunkEvent } from './generated.js';

/** What `replayChunks` needs of a Redis client: ioredis's `Redis` (or `Cluster`) fits. */
export interface XRangeClient {
  xrange(key: string, start: string, end: string): Promise<Array<[id: string, fields: string[]]>>;
}

export function chatStreamKey(jobId: string): string {
  return `vamu:chat:${jobId}`;
}

/** A chunk read back from the stream: the `chat-chunk` payload and its stream entry id. */
export interface ReplayedChunk extends ChatChunkEvent {
  streamId: string;
}

export interface ChatReplay {
  /**
   * The chunks of the latest attempt read, in stream order. A `chat-restart` or a chunk of a
   * newer attempt drops those of earlier attempts. Join the `delta`s in `seq` order.
   */
  chunks: ReplayedChunk[];
  /** The latest attempt read (null when nothing was read). */
  attempt: number | null;
  /** The id of the last entry read: pass it as `fromId` to read only what came after. */
  lastId: string | null;
}

/**
 * Reads the chat replay stream of a job, after the entry `fromId` (exclusive; from the start
 * when absent), on the Redis server **and database** of `VAMU_REDIS_URL`. The stream exists
 * only with `VAMU_NOTIFY` including `socketio`, and expires an hour after its last entry.
 * Check first that the job belongs to the asking user.
 */
export async function replayChunks(
  redis: XRangeClient,
  jobId: string,
  fromId?: string,
): Promise<ChatReplay> {
  const start = fromId === undefined ? '-' : `(${fromId}`;
  const entries = await redis.xrange(chatStreamKey(jobId), start, '+');
  let attempt: number | null = null;
  let chunks: ReplayedChunk[] = [];
  let lastId: string | null = null;
  for (const [id, flat] of entries) {
    lastId = id;
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i]!] = flat[i + 1]!;
    const entryAttempt = Number(f.attempt ?? 1);
    if (attempt !== null && entryAttempt < attempt) continue; // late, from an older attempt
    if (attempt === null || entryAttempt > attempt) {
      attempt = entryAttempt; // a retry started over: drop the earlier attempt's text
      chunks = [];
    }
    if (f.event !== 'chat-chunk') continue; // chat-restart: announces the attempt
    const chunk: ReplayedChunk = {
      streamId: id,
      jobId: f.jobId ?? jobId,
      conversationId: f.conversationId ?? '',
      seq: Number(f.seq),
      delta: f.delta ?? '',
      attempt: entryAttempt,
    };
    if (f.requestId !== undefined) chunk.requestId = f.requestId;
    if (f.rerunOf !== undefined) chunk.rerunOf = f.rerunOf;
    chunks.push(chunk);
  }
  return { chunks, attempt, lastId };
}
