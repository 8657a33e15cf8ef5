/**
 * @statgate/client — live query values from a statgate gateway.
 *
 * Every subscription is first registered over HTTP (`POST /realtime/subscribe`, which checks
 * the args and the caller's rights and returns a signed subscription token), then carried on
 * ONE WebSocket per client (`subscribe` / `unsubscribe` frames). The server pushes the current
 * value at once and a new one whenever it changes.
 *
 * Networks fail quietly, so the client does not trust a socket it has not heard from: it pings
 * on an interval and reconnects when a pong is late; it reconnects with exponential back-off and
 * full jitter (so thousands of clients do not return in the same instant); after a reconnect it
 * fetches fresh tokens for every live subscription, and the snapshots bring values up to date.
 * Browsers throttle timers in background tabs, so a tab becoming visible or the network coming
 * back triggers an immediate check instead of waiting for the next beat.
 *
 * This file has no imports on purpose: its compiled form is also the browser bundle.
 */

/** Connection state, as reported to `onStatus` listeners. */
export type Status = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The shape of one query: what it takes and what its subscribers receive. */
export interface QueryShape {
  args: object;
  result: unknown;
}

/** Any query, when no generated types are given. */
export type AnyQueries = Record<string, { args: Record<string, unknown>; result: unknown }>;

/** The query names of `Q` (a generated `StatgateQueries` interface, or `AnyQueries`). */
export type QueryName<Q> = Extract<keyof Q, string>;
export type ArgsOf<Q, N extends keyof Q> = Q[N] extends { args: infer A } ? A : never;
export type ResultOf<Q, N extends keyof Q> = Q[N] extends { result: infer R } ? R : unknown;

/** The part of the WebSocket API the client uses (the browser's, or Node's `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** Base URL of the gateway, e.g. `https://stats.example.com`. */
  url: string;
  /** Returns a JWT for the current user; called again whenever a fresh one is needed. */
  getAuthToken: () => string | Promise<string>;
  /** A WebSocket implementation; defaults to `globalThis.WebSocket` (pass `ws` on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** A fetch implementation; defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Interval between `ping`s on an open socket (default 20 s). */
  heartbeatIntervalMs?: number;
  /** How long a `pong` may take before the socket is considered dead (default 10 s). */
  heartbeatTimeoutMs?: number;
  /** Pong timeout for the quick check when a tab becomes visible or the network returns (default 3 s). */
  quickCheckTimeoutMs?: number;
  /** First reconnect delay cap (default 500 ms); doubles per failed attempt. */
  reconnectBaseMs?: number;
  /** Largest reconnect delay cap (default 30 s). */
  reconnectMaxMs?: number;
  /** Refresh the JWT on the socket this long before it expires (default 30 s). */
  authRefreshMarginMs?: number;
  /** Timeout of one `POST /realtime/subscribe` (default 10 s); a kept-alive connection may be dead. */
  requestTimeoutMs?: number;
  /** Client frames per second at most (the gateway closes sockets that send too many; default 80). */
  maxFramesPerSecond?: number;
  /** Called on every status change. */
  onStatus?: (status: Status) => void;
}

/** A failure the gateway reported (HTTP error or `error` event), or a transport failure. */
export class StatgateError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  readonly details: unknown;

  constructor(code: string, message: string, status?: number, details?: unknown) {
    super(message);
    this.name = 'StatgateError';
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

export interface SubscribeOptions {
  /** Called when the subscription is refused or its query keeps failing on the server. */
  onError?: (error: StatgateError) => void;
}

export interface Subscription<R> {
  readonly queryName: string;
  /** The canonical signature, once the gateway has accepted the subscription. */
  readonly signature: string | undefined;
  /** The latest value, or `undefined` before the first one. */
  readonly value: R | undefined;
  /** Stops updates; idempotent. */
  unsubscribe(): void;
}

export interface StatgateClient<Q> {
  subscribe<N extends QueryName<Q>>(
    queryName: N,
    args: ArgsOf<Q, N>,
    onUpdate: (value: ResultOf<Q, N>) => void,
    options?: SubscribeOptions,
  ): Subscription<ResultOf<Q, N>>;
  readonly status: Status;
  /** Adds a status listener; returns a function that removes it. */
  onStatus(listener: (status: Status) => void): () => void;
  /** Closes the socket, stops every timer and drops every subscription. */
  close(): void;
}

export function createClient<Q = AnyQueries>(options: ClientOptions): StatgateClient<Q> {
  return new Client<Q>(options);
}

const PROTOCOL = 'statgate.realtime.v1';
const OPEN = 1;
/** Close codes after which retrying the same socket cannot help without a fresh JWT. */
const AUTH_EXPIRED = 4001;
/** HTTP statuses worth retrying (the rest are the caller's mistake or a refusal). */
const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);

/** One local `subscribe()` call. */
interface Follower {
  onUpdate: (value: never) => void;
  onError: ((error: StatgateError) => void) | undefined;
}

/** Everything the client follows for one (query, args): one server-side subscription. */
interface Entry {
  key: string;
  queryName: string;
  args: object;
  followers: Set<Follower>;
  token: string | undefined;
  signature: string | undefined;
  value: unknown;
  hasValue: boolean;
  /** Versions restart per connection (another node may serve the next one). */
  version: number;
  /** Sent on the current socket. */
  sent: boolean;
  /** A POST for a token is in flight. */
  registering: boolean;
  failed: boolean;
  retries: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  frameId: number;
}

class Client<Q> implements StatgateClient<Q> {
  private readonly options: Required<Omit<ClientOptions, 'onStatus' | 'WebSocket' | 'fetch'>>;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly fetchImpl: typeof fetch;
  private readonly listeners = new Set<(status: Status) => void>();
  private readonly entries = new Map<string, Entry>();
  private readonly byFrameId = new Map<number, Entry>();
  private nextFrameId = 1;

  private currentStatus: Status = 'connecting';
  private socket: WebSocketLike | undefined;
  private everOpened = false;
  private closed = false;
  private attempt = 0;

  private jwt: string | undefined;
  private jwtExpiresAt = 0;
  private jwtRequest: Promise<string> | undefined;

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private authTimer: ReturnType<typeof setTimeout> | undefined;
  private frameTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly frameQueue: string[] = [];
  private readonly frameTimes: number[] = [];
  private readonly removeWindowListeners: () => void;

  constructor(options: ClientOptions) {
    this.options = {
      url: options.url.replace(/\/+$/, ''),
      getAuthToken: options.getAuthToken,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 20_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 10_000,
      quickCheckTimeoutMs: options.quickCheckTimeoutMs ?? 3_000,
      reconnectBaseMs: options.reconnectBaseMs ?? 500,
      reconnectMaxMs: options.reconnectMaxMs ?? 30_000,
      authRefreshMarginMs: options.authRefreshMarginMs ?? 30_000,
      maxFramesPerSecond: options.maxFramesPerSecond ?? 80,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    };
    const WebSocketImpl =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketImpl) {
      throw new StatgateError('no_websocket', 'no WebSocket implementation: pass options.WebSocket (e.g. the ws package)');
    }
    this.WebSocketImpl = WebSocketImpl;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (!fetchImpl) {
      throw new StatgateError('no_fetch', 'no fetch implementation: pass options.fetch');
    }
    this.fetchImpl = fetchImpl.bind(globalThis);
    if (options.onStatus) this.listeners.add(options.onStatus);
    this.removeWindowListeners = this.watchWindow();
  }

  get status(): Status {
    return this.currentStatus;
  }

  onStatus(listener: (status: Status) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  subscribe<N extends QueryName<Q>>(
    queryName: N,
    args: ArgsOf<Q, N>,
    onUpdate: (value: ResultOf<Q, N>) => void,
    options: SubscribeOptions = {},
  ): Subscription<ResultOf<Q, N>> {
    if (this.closed) throw new StatgateError('closed', 'the client is closed');
    const key = `${queryName}\u0000${stableStringify(args)}`;
    let entry = this.entries.get(key);
    const follower: Follower = { onUpdate: onUpdate as (value: never) => void, onError: options.onError };
    if (!entry) {
      entry = {
        key,
        queryName,
        args: args as object,
        followers: new Set(),
        token: undefined,
        signature: undefined,
        value: undefined,
        hasValue: false,
        version: 0,
        sent: false,
        registering: false,
        failed: false,
        retries: 0,
        retryTimer: undefined,
        frameId: this.nextFrameId++,
      };
      this.entries.set(key, entry);
      this.byFrameId.set(entry.frameId, entry);
      entry.followers.add(follower);
      void this.register(entry);
      this.ensureSocket();
    } else {
      entry.followers.add(follower);
      if (entry.hasValue) {
        const value = entry.value;
        queueMicrotask(() => {
          if (entry?.followers.has(follower)) follower.onUpdate(value as never);
        });
      }
    }
    const self = entry;
    return {
      queryName,
      get signature() {
        return self.signature;
      },
      get value() {
        return self.hasValue ? (self.value as ResultOf<Q, N>) : undefined;
      },
      unsubscribe: () => this.unfollow(self, follower),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.entries.values()) clearTimeout(entry.retryTimer);
    this.entries.clear();
    this.byFrameId.clear();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.frameTimer);
    this.frameQueue.length = 0;
    this.stopSocketTimers();
    this.removeWindowListeners();
    const socket = this.socket;
    this.socket = undefined;
    if (socket) {
      detach(socket);
      try {
        socket.close(1000, 'client closed');
      } catch {
        // Closing a socket that never opened may throw; it is gone either way.
      }
    }
    this.setStatus('closed');
  }

  // ---- subscriptions -------------------------------------------------------------------------

  private unfollow(entry: Entry, follower: Follower): void {
    if (!entry.followers.delete(follower) || entry.followers.size > 0) return;
    if (this.entries.get(entry.key) !== entry) return;
    this.entries.delete(entry.key);
    this.byFrameId.delete(entry.frameId);
    clearTimeout(entry.retryTimer);
    if (entry.sent && entry.signature && this.isOpen()) {
      this.sendFrame(JSON.stringify({ type: 'unsubscribe', signature: entry.signature }));
    }
  }

  /** Gets a subscription token over HTTP, then sends it on the socket if one is open. */
  private async register(entry: Entry): Promise<void> {
    if (entry.registering || this.closed) return;
    entry.registering = true;
    try {
      const reply = await this.postSubscribe(entry);
      if (this.entries.get(entry.key) !== entry) return;
      entry.token = reply.token;
      entry.signature = reply.signature;
      entry.retries = 0;
      if (this.isOpen()) this.sendSubscribe(entry);
    } catch (error) {
      if (this.entries.get(entry.key) !== entry) return;
      const failure = asStatgateError(error);
      if (isRetryable(failure)) {
        entry.retryTimer = setTimeout(() => void this.register(entry), this.backoff(entry.retries++));
      } else {
        entry.failed = true;
        this.fail(entry, failure);
      }
    } finally {
      entry.registering = false;
    }
  }

  private async postSubscribe(entry: Entry): Promise<{ token: string; signature: string }> {
    for (let authAttempt = 0; ; authAttempt++) {
      const authToken = await this.authToken(authAttempt > 0);
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), this.options.requestTimeoutMs);
      let response: Response;
      let body:
        | { token?: string; signature?: string; error?: { code?: string; message?: string; details?: unknown } }
        | undefined;
      try {
        response = await this.fetchImpl(`${this.options.url}/realtime/subscribe`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ queryName: entry.queryName, args: entry.args, authToken }),
          signal: abort.signal,
        });
        body = (await response.json()) as typeof body;
      } catch (error) {
        throw new StatgateError('network', `subscribe request failed: ${String(error)}`);
      } finally {
        clearTimeout(timer);
      }
      if (response.ok && body?.token && body.signature) {
        return { token: body.token, signature: body.signature };
      }
      // An expired JWT gets one fresh one; a second 401 is a real refusal.
      if (response.status === 401 && authAttempt === 0) continue;
      throw new StatgateError(
        body?.error?.code ?? 'http_error',
        body?.error?.message ?? `subscribe answered HTTP ${response.status}`,
        response.status,
        body?.error?.details,
      );
    }
  }

  private sendSubscribe(entry: Entry): void {
    if (!entry.token || entry.sent) return;
    entry.sent = true;
    this.sendFrame(JSON.stringify({ type: 'subscribe', token: entry.token, id: entry.frameId }));
  }

  private fail(entry: Entry, error: StatgateError): void {
    for (const follower of entry.followers) follower.onError?.(error);
  }

  // ---- the JWT -------------------------------------------------------------------------------

  /** A JWT that is not about to expire; `fresh` forces a new one (after a 401). */
  private async authToken(fresh = false): Promise<string> {
    const margin = this.options.authRefreshMarginMs;
    if (!fresh && this.jwt && Date.now() < this.jwtExpiresAt - margin) return this.jwt;
    if (!this.jwtRequest) {
      this.jwtRequest = Promise.resolve()
        .then(() => this.options.getAuthToken())
        .then((jwt) => {
          this.jwt = jwt;
          this.jwtExpiresAt = jwtExpiry(jwt);
          return jwt;
        })
        .finally(() => {
          this.jwtRequest = undefined;
        });
    }
    return this.jwtRequest;
  }

  /** Sends an `auth` frame with a fresh JWT shortly before the current one expires. */
  private scheduleAuthRefresh(): void {
    clearTimeout(this.authTimer);
    if (!Number.isFinite(this.jwtExpiresAt)) return;
    const due = Math.max(0, this.jwtExpiresAt - this.options.authRefreshMarginMs - Date.now());
    this.authTimer = setTimeout(() => {
      this.authToken(true)
        .then((jwt) => {
          if (!this.isOpen()) return;
          this.sendFrame(JSON.stringify({ type: 'auth', authToken: jwt }));
          this.scheduleAuthRefresh();
        })
        .catch(() => this.dropSocket('auth refresh failed'));
    }, due);
  }

  // ---- the socket ----------------------------------------------------------------------------

  private isOpen(): boolean {
    return this.socket !== undefined && this.socket.readyState === OPEN && this.currentStatus === 'open';
  }

  private ensureSocket(): void {
    if (this.closed || this.socket || this.reconnectTimer) return;
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.reconnectTimer = undefined;
    if (this.closed || this.socket) return;
    this.setStatus(this.everOpened ? 'reconnecting' : 'connecting');
    let jwt: string;
    try {
      jwt = await this.authToken();
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.closed || this.socket) return;
    const url = `${toWebSocketUrl(this.options.url)}/realtime/ws?authToken=${encodeURIComponent(jwt)}`;
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketImpl(url, PROTOCOL);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => this.onOpen(socket);
    socket.onmessage = (event) => this.onMessage(socket, event.data);
    socket.onerror = () => {
      // Always followed by a close event, which does the work.
    };
    socket.onclose = (event) => this.onClose(socket, event.code);
  }

  private onOpen(socket: WebSocketLike): void {
    if (socket !== this.socket) return;
    this.everOpened = true;
    this.attempt = 0;
    this.setStatus('open');
    this.startHeartbeat();
    this.scheduleAuthRefresh();
    for (const entry of this.entries.values()) {
      if (entry.failed) continue;
      if (entry.token) this.sendSubscribe(entry);
      else void this.register(entry);
    }
  }

  private onMessage(socket: WebSocketLike, data: unknown): void {
    if (socket !== this.socket) return;
    this.clearPongWait();
    if (typeof data !== 'string') return;
    let event: { event?: string; payload?: Record<string, unknown> };
    try {
      event = JSON.parse(data) as typeof event;
    } catch {
      return;
    }
    const payload = event.payload ?? {};
    switch (event.event) {
      case 'query:update':
        this.onUpdate(payload);
        break;
      case 'error':
        this.onServerError(payload);
        break;
      default:
        // pong, subscribed, unsubscribed: liveness is all they carry here.
        break;
    }
  }

  private onUpdate(payload: Record<string, unknown>): void {
    const signature = payload.signature;
    const version = payload.version;
    if (typeof signature !== 'string' || typeof version !== 'number') return;
    for (const entry of this.entries.values()) {
      if (entry.signature !== signature || version <= entry.version) continue;
      entry.version = version;
      const value = payload.data;
      const changed = !entry.hasValue || stableStringify(entry.value) !== stableStringify(value);
      entry.value = value;
      entry.hasValue = true;
      if (changed) {
        for (const follower of [...entry.followers]) follower.onUpdate(value as never);
      }
    }
  }

  private onServerError(payload: Record<string, unknown>): void {
    const code = typeof payload.code === 'string' ? payload.code : 'error';
    const message = typeof payload.message === 'string' ? payload.message : code;
    const error = new StatgateError(code, message, undefined, payload);
    const byId = typeof payload.id === 'number' ? this.byFrameId.get(payload.id) : undefined;
    const bySignature =
      typeof payload.signature === 'string'
        ? [...this.entries.values()].filter((entry) => entry.signature === payload.signature)
        : [];
    const affected = byId ? [byId] : bySignature;
    for (const entry of affected) {
      if (byId && code === 'unauthorized' && entry.retries++ < 3) {
        // The token went stale (or the JWT did): get a fresh one rather than give up.
        entry.token = undefined;
        entry.sent = false;
        void this.register(entry);
        continue;
      }
      this.fail(entry, error);
    }
  }

  private onClose(socket: WebSocketLike, code: number): void {
    if (socket !== this.socket) return;
    detach(socket);
    this.socket = undefined;
    this.stopSocketTimers();
    this.frameQueue.length = 0;
    for (const entry of this.entries.values()) {
      // Tokens are re-fetched after a reconnect (they may be near expiry, or the user changed).
      entry.sent = false;
      entry.token = undefined;
      entry.version = 0;
    }
    if (code === AUTH_EXPIRED) this.jwtExpiresAt = 0;
    if (!this.closed) this.scheduleReconnect();
  }

  /** Gives up on the current socket (dead or unusable) and reconnects. */
  private dropSocket(reason: string): void {
    const socket = this.socket;
    if (!socket) return;
    try {
      socket.close(4000, reason);
    } catch {
      // Already closing.
    }
    // A dead peer never completes the closing handshake: do not wait for it.
    this.onClose(socket, 4000);
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.setStatus(this.everOpened ? 'reconnecting' : 'connecting');
    const delay = this.backoff(this.attempt++);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  /** Full jitter: uniformly random below a cap that doubles per attempt, up to the maximum. */
  private backoff(attempt: number): number {
    const cap = Math.min(this.options.reconnectMaxMs, this.options.reconnectBaseMs * 2 ** Math.min(attempt, 30));
    return Math.floor(Math.random() * cap);
  }

  // ---- heartbeat and liveness ----------------------------------------------------------------

  private startHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => this.ping(this.options.heartbeatTimeoutMs), this.options.heartbeatIntervalMs);
  }

  /** Sends `ping`; without any answer within `timeoutMs` the socket is dropped. */
  private ping(timeoutMs: number): void {
    if (!this.isOpen()) return;
    if (this.pongTimer === undefined) {
      this.pongTimer = setTimeout(() => {
        this.pongTimer = undefined;
        this.dropSocket('no pong');
      }, timeoutMs);
    }
    this.sendNow('ping');
  }

  private clearPongWait(): void {
    clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
  }

  private stopSocketTimers(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    clearTimeout(this.frameTimer);
    this.frameTimer = undefined;
    this.clearPongWait();
  }

  /** Checks the connection at once (tab visible again, network back). */
  private checkNow = (): void => {
    if (this.closed) return;
    if (typeof document !== 'undefined' && document.visibilityState === 'hidden') return;
    if (this.isOpen()) {
      this.clearPongWait();
      this.ping(this.options.quickCheckTimeoutMs);
    } else if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      void this.connect();
    }
  };

  private watchWindow(): () => void {
    const target = globalThis as {
      addEventListener?: (type: string, listener: () => void) => void;
      removeEventListener?: (type: string, listener: () => void) => void;
    };
    if (typeof target.addEventListener !== 'function' || typeof document === 'undefined') return () => {};
    target.addEventListener('online', this.checkNow);
    document.addEventListener('visibilitychange', this.checkNow);
    return () => {
      target.removeEventListener?.('online', this.checkNow);
      document.removeEventListener('visibilitychange', this.checkNow);
    };
  }

  // ---- outgoing frames -----------------------------------------------------------------------

  /** Queues a frame, paced below the gateway's messages-per-second limit. */
  private sendFrame(frame: string): void {
    this.frameQueue.push(frame);
    this.flushFrames();
  }

  private flushFrames = (): void => {
    this.frameTimer = undefined;
    const now = Date.now();
    while (this.frameTimes.length > 0 && (this.frameTimes[0] ?? 0) <= now - 1000) this.frameTimes.shift();
    while (this.frameQueue.length > 0 && this.frameTimes.length < this.options.maxFramesPerSecond) {
      const frame = this.frameQueue.shift();
      if (frame !== undefined) this.sendNow(frame);
    }
    if (this.frameQueue.length > 0 && this.frameTimer === undefined) {
      const wait = Math.max(1, (this.frameTimes[0] ?? now) + 1000 - now);
      this.frameTimer = setTimeout(this.flushFrames, wait);
    }
  };

  private sendNow(frame: string): void {
    if (!this.socket || this.socket.readyState !== OPEN) return;
    this.frameTimes.push(Date.now());
    try {
      this.socket.send(frame);
    } catch {
      this.dropSocket('send failed');
    }
  }

  private setStatus(status: Status): void {
    if (this.currentStatus === status) return;
    this.currentStatus = status;
    for (const listener of [...this.listeners]) listener(status);
  }
}

function detach(socket: WebSocketLike): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onerror = null;
  socket.onclose = null;
}

function toWebSocketUrl(base: string): string {
  return base.replace(/^http(s?):/i, 'ws$1:');
}

/** The JWT's `exp` in milliseconds, or `Infinity` when it has none or cannot be read. */
function jwtExpiry(jwt: string): number {
  const part = jwt.split('.')[1];
  if (!part) return Infinity;
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='))) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

function asStatgateError(error: unknown): StatgateError {
  return error instanceof StatgateError ? error : new StatgateError('error', String(error));
}

function isRetryable(error: StatgateError): boolean {
  return error.status === undefined ? error.code === 'network' : RETRYABLE_STATUS.has(error.status);
}

/** JSON with object keys sorted, so equal args give equal keys whatever their order. */
function stableStringify(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'undefined';
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  const keys = Object.keys(value as Record<string, unknown>).sort();
  return `{${keys
    .map((key) => `${JSON.stringify(key)}:${stableStringify((value as Record<string, unknown>)[key])}`)
    .join(',')}}`;
}
