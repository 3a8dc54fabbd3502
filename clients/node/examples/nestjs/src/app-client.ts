// The app's side (browser or React Native): a typed socket.io-client Socket. Each handler gets
// its event's payload type; requestId ties an event to the request that caused it.
import { io, type Socket } from 'socket.io-client';
import type { ServerToClientEvents } from '@vamu/ai-jobs';

export function listen(url: string, token: string, pending: Map<string, (ideasJobId: string) => void>) {
  const socket: Socket<ServerToClientEvents> = io(url, { auth: { token } });
  const drafts = new Map<string, { attempt: number; parts: string[] }>();

  socket.on('inspiration-ready', ({ jobId, requestId }) => {
    if (requestId !== undefined) pending.get(requestId)?.(jobId);
  });
  socket.on('ai-job-failed', ({ jobId, errorKind, feature }) => {
    console.warn(`${feature} job ${jobId} failed: ${errorKind}`);
  });
  socket.on('chat-restart', ({ jobId, attempt }) => {
    drafts.set(jobId, { attempt, parts: [] });
  });
  socket.on('chat-chunk', ({ jobId, attempt, seq, delta }) => {
    let draft = drafts.get(jobId);
    if (!draft || attempt > draft.attempt) drafts.set(jobId, (draft = { attempt, parts: [] }));
    if (attempt === draft.attempt) draft.parts[seq] = delta;
  });
  socket.on('chat-reply-ready', ({ jobId, finishReason }) => {
    drafts.delete(jobId);
    if (finishReason === 'length') console.info(`reply of ${jobId} was cut at the token limit`);
  });
  socket.on('agent-step', ({ step, kind, tool }) => console.debug(step, kind, tool ?? ''));
  socket.on('agent-finished', ({ jobId, status }) => console.info(`agent ${jobId}: ${status}`));
  return socket;
}
