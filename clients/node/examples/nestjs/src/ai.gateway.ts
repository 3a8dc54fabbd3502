// The Socket.IO server: each authenticated socket joins its user's room, where vamu-tasks
// publishes through @socket.io/redis-adapter (see docs/contracts.md, "Server and listener").
import { WebSocketGateway, WebSocketServer, type OnGatewayConnection } from '@nestjs/websockets';
import type { ServerToClientEvents } from '@vamu/ai-jobs';
import type { Server, Socket } from 'socket.io';

type ClientToServerEvents = Record<string, never>;
type SocketData = { userId: string };

@WebSocketGateway()
export class AiGateway implements OnGatewayConnection {
  @WebSocketServer()
  server!: Server<ClientToServerEvents, ServerToClientEvents, Record<string, never>, SocketData>;

  handleConnection(socket: Socket<ClientToServerEvents, ServerToClientEvents,
    Record<string, never>, SocketData>): void {
    void socket.join(`user:${socket.data.userId}`); // set by your auth middleware
  }

  /** The same payloads, typed, if NestJS itself ever emits one. */
  notifyFailed(userId: string, jobId: string): void {
    this.server.to(`user:${userId}`).emit('ai-job-failed', {
      jobId, feature: 'inspiration', errorKind: 'cancelled',
    });
  }
}
