// A TCP proxy that can black-hole its open connections: bytes stop flowing both ways but no
// socket is closed, which is what a dead NAT entry or a sleeping laptop looks like.
import { createServer, connect, type Server, type Socket } from 'node:net';

export class BlackHoleProxy {
  private readonly server: Server;
  private readonly open = new Set<{ client: Socket; upstream: Socket; dead: boolean }>();
  connections = 0;

  private constructor(server: Server) {
    this.server = server;
  }

  static async start(targetPort: number): Promise<BlackHoleProxy> {
    const server = createServer();
    const proxy = new BlackHoleProxy(server);
    server.on('connection', (client) => proxy.accept(client, targetPort));
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    return proxy;
  }

  get url(): string {
    const address = this.server.address();
    return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  }

  private accept(client: Socket, targetPort: number): void {
    this.connections += 1;
    const upstream = connect(targetPort, '127.0.0.1');
    const pair = { client, upstream, dead: false };
    this.open.add(pair);
    client.on('data', (chunk) => {
      if (!pair.dead) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!pair.dead) client.write(chunk);
    });
    const end = () => {
      this.open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  }

  /** Silences every connection open now; new connections pass normally. */
  blackHole(): void {
    for (const pair of this.open) pair.dead = true;
  }

  async close(): Promise<void> {
    for (const pair of this.open) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    await new Promise((done) => this.server.close(done));
  }
}
