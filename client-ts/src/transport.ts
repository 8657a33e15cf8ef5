/**
 * The one WebSocket of a client, kept alive.
 *
 * Networks fail quietly, so the transport does not trust a socket it has not heard from: it
 * pings on an interval and drops the socket when no answer comes in time; it reconnects with
 * exponential back-off and full jitter (so thousands of clients do not return in the same
 * instant); it sends the socket a fresh JWT shortly before the current one expires; it paces
 * outgoing frames below the gateway's per-socket message limit. Browsers throttle timers in
 * background tabs, so a tab becoming visible or the network coming back triggers an immediate
 * check instead of waiting for the next beat. What the frames mean is the client's business.
 */

import type { JwtSource } from './auth.js';
import { AUTH_EXPIRED, OPEN, PING, PROTOCOL, authFrame, parseEvent, type ServerEvent } from './protocol.js';

/** Connection state, as reported to `onStatus` listeners. */
export type Status = 'connecting' | 'open' | 'reconnecting' | 'closed';

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

export interface TransportOptions {
  url: string;
  WebSocket: WebSocketConstructor;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  quickCheckTimeoutMs: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  maxFramesPerSecond: number;
}

/** What the transport tells its owner. */
export interface TransportEvents {
  /** A socket opened: subscribe on it. */
  open(): void;
  message(event: ServerEvent): void;
  /** The socket is gone (a new one follows unless the transport was closed). */
  close(): void;
  status(status: Status): void;
}

/** Full jitter: uniformly random below a cap that doubles per attempt, up to `maxMs`. */
export function backoff(attempt: number, baseMs: number, maxMs: number): number {
  return Math.floor(Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30)));
}

export class Transport {
  status: Status = 'connecting';
  #socket: WebSocketLike | undefined;
  #everOpened = false;
  #closed = false;
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #pongTimer: ReturnType<typeof setTimeout> | undefined;
  #authTimer: ReturnType<typeof setTimeout> | undefined;
  #frameTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #frameQueue: string[] = [];
  readonly #frameTimes: number[] = [];
  readonly #unwatchWindow: () => void;
  readonly #options: TransportOptions;
  readonly #jwt: JwtSource;
  readonly #events: TransportEvents;

  constructor(options: TransportOptions, jwt: JwtSource, events: TransportEvents) {
    this.#options = options;
    this.#jwt = jwt;
    this.#events = events;
    this.#unwatchWindow = this.#watchWindow();
  }

  isOpen(): boolean {
    return this.#socket?.readyState === OPEN && this.status === 'open';
  }

  /** Opens a socket unless one is open, opening or due. */
  ensure(): void {
    if (!this.#closed && !this.#socket && !this.#reconnectTimer) void this.#connect();
  }

  /** Queues a frame, paced below the gateway's messages-per-second limit. */
  send(frame: string): void {
    this.#frameQueue.push(frame);
    this.#flushFrames();
  }

  /** Closes the socket and stops every timer, for good. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#stopSocketTimers();
    this.#frameQueue.length = 0;
    this.#unwatchWindow();
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket) {
      detach(socket);
      try {
        socket.close(1000, 'client closed');
      } catch {
        // Closing a socket that never opened may throw; it is gone either way.
      }
    }
    this.#setStatus('closed');
  }

  async #connect(): Promise<void> {
    this.#reconnectTimer = undefined;
    if (this.#closed || this.#socket) return;
    this.#setStatus(this.#everOpened ? 'reconnecting' : 'connecting');
    let socket: WebSocketLike;
    try {
      const jwt = await this.#jwt.token();
      if (this.#closed || this.#socket) return;
      const base = this.#options.url.replace(/^http(s?):/i, 'ws$1:');
      socket = new this.#options.WebSocket(`${base}/realtime/ws?authToken=${encodeURIComponent(jwt)}`, PROTOCOL);
    } catch {
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    socket.onopen = () => this.#onOpen(socket);
    socket.onmessage = (event) => this.#onMessage(socket, event.data);
    socket.onerror = () => {
      // Always followed by a close event, which does the work.
    };
    socket.onclose = (event) => this.#onClose(socket, event.code);
  }

  #onOpen(socket: WebSocketLike): void {
    if (socket !== this.#socket) return;
    this.#everOpened = true;
    this.#attempt = 0;
    this.#setStatus('open');
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = setInterval(() => this.#ping(this.#options.heartbeatTimeoutMs), this.#options.heartbeatIntervalMs);
    this.#scheduleAuthRefresh();
    this.#events.open();
  }

  #onMessage(socket: WebSocketLike, data: unknown): void {
    if (socket !== this.#socket) return;
    this.#clearPongWait();
    const event = parseEvent(data);
    if (event) this.#events.message(event);
  }

  #onClose(socket: WebSocketLike, code: number): void {
    if (socket !== this.#socket) return;
    detach(socket);
    this.#socket = undefined;
    this.#stopSocketTimers();
    this.#frameQueue.length = 0;
    if (code === AUTH_EXPIRED) this.#jwt.expiresAt = 0;
    this.#events.close();
    this.#scheduleReconnect();
  }

  /** Gives up on the current socket (dead or unusable) and reconnects. */
  #dropSocket(reason: string): void {
    const socket = this.#socket;
    if (!socket) return;
    try {
      socket.close(4000, reason);
    } catch {
      // Already closing.
    }
    // A dead peer never completes the closing handshake: do not wait for it.
    this.#onClose(socket, 4000);
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnectTimer) return;
    this.#setStatus(this.#everOpened ? 'reconnecting' : 'connecting');
    const delay = backoff(this.#attempt++, this.#options.reconnectBaseMs, this.#options.reconnectMaxMs);
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delay);
  }

  /** Sends an `auth` frame with a fresh JWT shortly before the current one expires. */
  #scheduleAuthRefresh(): void {
    clearTimeout(this.#authTimer);
    const due = this.#jwt.refreshDueIn();
    if (!Number.isFinite(due)) return;
    this.#authTimer = setTimeout(() => {
      this.#jwt
        .token(true)
        .then((jwt) => {
          if (!this.isOpen()) return;
          this.send(authFrame(jwt));
          this.#scheduleAuthRefresh();
        })
        .catch(() => this.#dropSocket('auth refresh failed'));
    }, due);
  }

  /** Sends `ping`; without any answer within `timeoutMs` the socket is dropped. */
  #ping(timeoutMs: number): void {
    if (!this.isOpen()) return;
    this.#pongTimer ??= setTimeout(() => {
      this.#pongTimer = undefined;
      this.#dropSocket('no pong');
    }, timeoutMs);
    this.#sendNow(PING);
  }

  #clearPongWait(): void {
    clearTimeout(this.#pongTimer);
    this.#pongTimer = undefined;
  }

  #stopSocketTimers(): void {
    clearInterval(this.#heartbeatTimer);
    clearTimeout(this.#authTimer);
    clearTimeout(this.#frameTimer);
    this.#heartbeatTimer = this.#authTimer = this.#frameTimer = undefined;
    this.#clearPongWait();
  }

  /** Checks the connection at once (tab visible again, network back). */
  #checkNow = (): void => {
    if (this.#closed || document.visibilityState === 'hidden') return;
    if (this.isOpen()) {
      this.#clearPongWait();
      this.#ping(this.#options.quickCheckTimeoutMs);
    } else if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      void this.#connect();
    }
  };

  #watchWindow(): () => void {
    if (typeof addEventListener !== 'function' || typeof document === 'undefined') return () => {};
    addEventListener('online', this.#checkNow);
    document.addEventListener('visibilitychange', this.#checkNow);
    return () => {
      removeEventListener('online', this.#checkNow);
      document.removeEventListener('visibilitychange', this.#checkNow);
    };
  }

  #flushFrames = (): void => {
    this.#frameTimer = undefined;
    const now = Date.now();
    while (this.#frameTimes.length > 0 && (this.#frameTimes[0] ?? 0) <= now - 1000) this.#frameTimes.shift();
    while (this.#frameQueue.length > 0 && this.#frameTimes.length < this.#options.maxFramesPerSecond) {
      this.#sendNow(this.#frameQueue.shift() as string);
    }
    if (this.#frameQueue.length > 0 && this.#frameTimer === undefined) {
      this.#frameTimer = setTimeout(this.#flushFrames, Math.max(1, (this.#frameTimes[0] ?? now) + 1000 - now));
    }
  };

  #sendNow(frame: string): void {
    if (this.#socket?.readyState !== OPEN) return;
    this.#frameTimes.push(Date.now());
    try {
      this.#socket.send(frame);
    } catch {
      this.#dropSocket('send failed');
    }
  }

  #setStatus(status: Status): void {
    if (this.status === status) return;
    this.status = status;
    this.#events.status(status);
  }
}

function detach(socket: WebSocketLike): void {
  socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
}
