/**
 * The client: live query values from a statgate gateway.
 *
 * Every subscription is first registered over HTTP (the gateway checks the args and the
 * caller's rights and returns a signed token; see `registration.ts`), then carried on ONE
 * WebSocket per client (`transport.ts`) with `subscribe` / `unsubscribe` frames. The gateway
 * pushes the current value at once and a new one whenever it changes. After a reconnect the
 * client fetches fresh tokens for every live subscription, and the snapshots bring values up
 * to date.
 */

import { JwtSource } from './auth.js';
import { subscriptionKey } from './key.js';
import { StatgateError, subscribeFrame, unsubscribeFrame, type ServerEvent } from './protocol.js';
import { Registrar } from './registration.js';
import { Handle, Shared, type SubscribeOptions, type Subscription } from './subscription.js';
import { Transport, type Status, type WebSocketConstructor } from './transport.js';
import type { AnyQueries, ArgsOf, QueryName, ResultOf } from './types.js';


/** Error codes with which the server ends a subscription it had accepted. */
const ENDED_BY_SERVER = new Set(['query_removed', 'forbidden', 'too_many_signatures']);

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
  /** First reconnect (and request retry) delay cap (default 500 ms); doubles per failed attempt. */
  reconnectBaseMs?: number;
  /** Largest reconnect (and request retry) delay cap (default 30 s). */
  reconnectMaxMs?: number;
  /** Refresh the JWT on the socket this long before it expires (default 30 s). */
  authRefreshMarginMs?: number;
  /** Timeout of one subscribe request (default 10 s); a kept-alive connection may be dead. */
  requestTimeoutMs?: number;
  /** Client frames per second at most (the gateway closes sockets that send too many; default 80). */
  maxFramesPerSecond?: number;
  /** Called on every status change. */
  onStatus?: (status: Status) => void;
  /** Errors of subscriptions that have no `onError` of their own; without it they go to
   * `console.error`, once per subscription. */
  onError?: (error: StatgateError, subscription: Subscription<unknown>) => void;
}

export interface StatgateClient<Q = AnyQueries> {
  /** Follows `queryName(args)`: `onUpdate` gets the current value, then every new one. */
  subscribe<N extends QueryName<Q>>(
    queryName: N,
    args: ArgsOf<Q, N>,
    onUpdate?: (value: ResultOf<Q, N>) => void,
    options?: SubscribeOptions,
  ): Subscription<ResultOf<Q, N>>;
  readonly status: Status;
  /** Adds a status listener; returns a function that removes it. */
  onStatus(listener: (status: Status) => void): () => void;
  /** Closes the socket, stops every timer and ends every subscription. */
  close(): void;
}

export function createClient<Q = AnyQueries>(options: ClientOptions): StatgateClient<Q> {
  return new Client<Q>(options);
}

class Client<Q> implements StatgateClient<Q> {
  readonly #listeners = new Set<(status: Status) => void>();
  readonly #subscriptions = new Map<string, Shared>();
  readonly #byId = new Map<number, Shared>();
  #nextId = 1;
  #closed = false;
  /** Absent where there is no WebSocket (e.g. a server rendering a page): `subscribe` throws there. */
  readonly #transport: Transport | undefined;
  readonly #registrar: Registrar;
  readonly #onError: ClientOptions['onError'];

  constructor(options: ClientOptions) {
    const url = options.url.replace(/\/+$/, '');
    const reconnectBaseMs = options.reconnectBaseMs ?? 500;
    const reconnectMaxMs = options.reconnectMaxMs ?? 30_000;
    const jwt = new JwtSource(options.getAuthToken, options.authRefreshMarginMs ?? 30_000);
    const fetchImpl = options.fetch ?? globalThis.fetch;
    this.#registrar = new Registrar(
      {
        url,
        fetch: (...request) => fetchImpl.apply(globalThis, request),
        requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
        reconnectBaseMs,
        reconnectMaxMs,
      },
      jwt,
    );
    const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.#transport =
      WebSocket &&
      new Transport(
        {
          url,
          WebSocket,
          heartbeatIntervalMs: options.heartbeatIntervalMs ?? 20_000,
          heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 10_000,
          quickCheckTimeoutMs: options.quickCheckTimeoutMs ?? 3_000,
          reconnectBaseMs,
          reconnectMaxMs,
          maxFramesPerSecond: options.maxFramesPerSecond ?? 80,
        },
        jwt,
        {
          open: () => this.#onOpen(),
          message: (event) => this.#onMessage(event),
          close: () => this.#onClose(),
          status: (status) => {
            for (const listener of [...this.#listeners]) listener(status);
          },
        },
      );
    this.#onError = options.onError;
    if (options.onStatus) this.#listeners.add(options.onStatus);
  }

  get status(): Status {
    return this.#closed ? 'closed' : (this.#transport?.status ?? 'connecting');
  }

  onStatus(listener: (status: Status) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  subscribe<N extends QueryName<Q>>(
    queryName: N,
    args: ArgsOf<Q, N>,
    onUpdate?: (value: ResultOf<Q, N>) => void,
    options: SubscribeOptions = {},
  ): Subscription<ResultOf<Q, N>> {
    if (this.#closed) throw new StatgateError('closed', 'the client is closed');
    if (!this.#transport) {
      throw new StatgateError('no_websocket', 'no WebSocket implementation: pass options.WebSocket (e.g. the ws package)');
    }
    const key = subscriptionKey(queryName, args);
    let shared = this.#subscriptions.get(key);
    const isNew = !shared;
    if (!shared) {
      shared = new Shared(key, queryName, args as object, this.#nextId++);
      this.#subscriptions.set(key, shared);
      this.#byId.set(shared.id, shared);
    }
    const handle = new Handle<ResultOf<Q, N>>(shared, this, onUpdate, options);
    shared.handles.add(handle);
    if (isNew) {
      this.#register(shared);
      this.#transport.ensure();
    } else if (shared.hasValue && onUpdate) {
      const value = shared.value as ResultOf<Q, N>;
      queueMicrotask(() => {
        if (handle.status !== 'unsubscribed') onUpdate(value);
      });
    }
    return handle;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#registrar.close();
    const all = [...this.#subscriptions.values()];
    this.#subscriptions.clear();
    this.#byId.clear();
    for (const shared of all) shared.end();
    if (this.#transport) this.#transport.close();
    else for (const listener of [...this.#listeners]) listener('closed');
  }

  // ---- called by handles ----------------------------------------------------------------------

  unfollow(shared: Shared, handle: Handle<unknown>): void {
    if (!shared.handles.delete(handle) || shared.handles.size > 0) return;
    if (this.#subscriptions.get(shared.key) !== shared) return;
    this.#subscriptions.delete(shared.key);
    this.#byId.delete(shared.id);
    const { kind } = shared.state;
    if ((kind === 'sent' || kind === 'live') && shared.signature && this.#transport?.isOpen()) {
      this.#transport.send(unsubscribeFrame(shared.signature));
    }
    shared.setState({ kind: 'closed' });
  }

  report(error: StatgateError, subscription: Subscription<unknown>): boolean {
    this.#onError?.(error, subscription);
    return this.#onError !== undefined;
  }

  // ---- tokens and frames ----------------------------------------------------------------------

  #register(shared: Shared): void {
    shared.setState({ kind: 'registering' });
    this.#registrar.register(
      shared,
      () => this.#subscriptions.get(shared.key) === shared,
      (outcome) => {
        if (this.#subscriptions.get(shared.key) !== shared) return;
        if (outcome instanceof StatgateError) return shared.fail(outcome, true);
        shared.signature = outcome.signature;
        shared.setState({ kind: 'registered', token: outcome.token });
        if (this.#transport?.isOpen()) this.#send(shared);
      },
    );
  }

  #send(shared: Shared): void {
    if (shared.state.kind !== 'registered') return;
    this.#transport?.send(subscribeFrame(shared.state.token, shared.id));
    shared.setState({ kind: 'sent' });
  }

  // ---- socket events --------------------------------------------------------------------------

  #onOpen(): void {
    this.#registrar.retryNow();
    for (const shared of this.#subscriptions.values()) {
      if (shared.state.kind === 'registered') this.#send(shared);
      else if (shared.state.kind === 'idle') this.#register(shared);
    }
  }

  #onClose(): void {
    for (const shared of this.#subscriptions.values()) {
      const { kind } = shared.state;
      // Tokens are fetched afresh after a reconnect (they may be near expiry, or the user changed).
      if (kind === 'registered' || kind === 'sent' || kind === 'live') shared.setState({ kind: 'idle' });
      shared.version = 0;
    }
  }

  #onMessage(event: ServerEvent): void {
    const payload = event.payload ?? {};
    if (event.event === 'query:update') {
      const { signature, version, data } = payload;
      if (typeof signature !== 'string' || typeof version !== 'number') return;
      for (const shared of this.#subscriptions.values()) {
        if (shared.signature === signature) shared.update(version, data);
      }
    } else if (event.event === 'error') {
      this.#onServerError(payload);
    }
    // pong, subscribed, unsubscribed, authenticated: liveness is all they carry here.
  }

  #onServerError(payload: Record<string, unknown>): void {
    const code = typeof payload.code === 'string' ? payload.code : 'error';
    const error = new StatgateError(code, typeof payload.message === 'string' ? payload.message : code, undefined, payload);
    const byId = typeof payload.id === 'number' ? this.#byId.get(payload.id) : undefined;
    if (byId) {
      if (code === 'unauthorized' && byId.retries-- > 0) {
        // The token went stale (or the JWT did): get a fresh one rather than give up.
        this.#register(byId);
      } else {
        byId.fail(error, true);
      }
      return;
    }
    for (const shared of this.#subscriptions.values()) {
      if (shared.signature !== payload.signature) continue;
      if (code === 'query_changed') {
        // The registry changed the query under it: subscribe again, through every check.
        shared.version = 0;
        this.#register(shared);
      } else {
        // `recompute_failed` and `value_too_large` leave the subscription in place (the next
        // change may succeed); the server ended the others.
        shared.fail(error, ENDED_BY_SERVER.has(code));
      }
    }
  }
}
