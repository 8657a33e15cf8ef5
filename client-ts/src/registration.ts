/**
 * Subscription tokens over HTTP. Every subscription is registered before it goes on the
 * socket: the gateway checks the args and the caller's rights and signs a token.
 *
 * The subscriptions asked for in one tick travel in one `POST /realtime/subscribe/batch`
 * (a page opening with dozens of counters makes one request), each answered on its own. A
 * gateway without the batch route (404) gets one `POST /realtime/subscribe` per subscription
 * from then on; a gateway with a smaller batch limit (400 with `details.maxSubscriptions`)
 * gets smaller batches. Requests that failed for a passing reason (network, 429, 5xx) are
 * retried together after a jittered back-off, or at once when the socket comes back.
 */

import type { JwtSource } from './auth.js';
import { StatgateError, asStatgateError, errorOf, isRetryable } from './protocol.js';
import { backoff } from './transport.js';

/** A subscription to register. */
export interface Wanted {
  queryName: string;
  args: object;
}

/** What the gateway grants: a token for the socket, and the signature updates will carry. */
export interface Grant {
  token: string;
  signature: string;
}

type Outcome = Grant | StatgateError;

interface Pending {
  wanted: Wanted;
  /** False once nobody wants it any more: it is dropped instead of sent. */
  alive: () => boolean;
  done: (outcome: Outcome) => void;
}

export interface RegistrarOptions {
  url: string;
  fetch: typeof fetch;
  requestTimeoutMs: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
}

export class Registrar {
  #queue: Pending[] = [];
  #scheduled = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #attempt = 0;
  #closed = false;
  /** The gateway has the batch route, until it answers 404. */
  #batches = true;
  #maxBatch = 100;

  readonly #options: RegistrarOptions;
  readonly #jwt: JwtSource;

  constructor(options: RegistrarOptions, jwt: JwtSource) {
    this.#options = options;
    this.#jwt = jwt;
  }

  /** Registers `wanted` with the other subscriptions of this tick; `done` gets a grant or a final refusal. */
  register(wanted: Wanted, alive: () => boolean, done: (outcome: Outcome) => void): void {
    this.#queue.push({ wanted, alive, done });
    this.#schedule();
  }

  /** Sends what waits for a retry now (the gateway is evidently back). */
  retryNow(): void {
    if (this.#retryTimer === undefined) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#schedule();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#queue = [];
  }

  #schedule(): void {
    if (this.#scheduled || this.#retryTimer !== undefined) return;
    this.#scheduled = true;
    queueMicrotask(() => void this.#flush());
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const batch = this.#queue.filter((pending) => pending.alive());
    this.#queue = [];
    if (this.#closed || batch.length === 0) return;
    const outcomes = await this.#send(batch.map((pending) => pending.wanted)).catch((error: unknown) =>
      batch.map(() => asStatgateError(error)),
    );
    if (this.#closed) return;
    batch.forEach((pending, i) => {
      const outcome = outcomes[i] ?? new StatgateError('bad_reply', 'the gateway answered fewer subscriptions than asked');
      if (outcome instanceof StatgateError && isRetryable(outcome)) this.#queue.push(pending);
      else pending.done(outcome);
    });
    if (this.#queue.length === 0) {
      this.#attempt = 0;
    } else if (this.#retryTimer === undefined) {
      const delay = backoff(this.#attempt++, this.#options.reconnectBaseMs, this.#options.reconnectMaxMs);
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        this.#schedule();
      }, delay);
    }
  }

  /** One outcome per wanted subscription, in order; throws when the whole request failed. */
  async #send(list: Wanted[]): Promise<Outcome[]> {
    if (!this.#batches) return Promise.all(list.map((wanted) => this.#sendOne(wanted)));
    if (list.length > this.#maxBatch) {
      const chunks: Wanted[][] = [];
      for (let i = 0; i < list.length; i += this.#maxBatch) chunks.push(list.slice(i, i + this.#maxBatch));
      return (await Promise.all(chunks.map((chunk) => this.#send(chunk)))).flat();
    }
    try {
      const reply = (await this.#post('/realtime/subscribe/batch', (authToken) => ({
        subscriptions: list.map(({ queryName, args }) => ({ queryName, args })),
        authToken,
      }))) as { results?: Array<{ error?: { status?: number } } & Partial<Grant>> };
      return list.map((_, i) => {
        const result = reply.results?.[i];
        return result?.error ? errorOf(result, result.error.status) : grantOf(result);
      });
    } catch (error) {
      const failure = asStatgateError(error);
      const max = (failure.details as { maxSubscriptions?: unknown } | undefined)?.maxSubscriptions;
      if (failure.status === 404) {
        this.#batches = false; // an older gateway
      } else if (typeof max === 'number' && max > 0 && max < list.length) {
        this.#maxBatch = max;
      } else {
        throw failure;
      }
      return this.#send(list);
    }
  }

  async #sendOne(wanted: Wanted): Promise<Outcome> {
    try {
      return grantOf(await this.#post('/realtime/subscribe', (authToken) => ({
        queryName: wanted.queryName,
        args: wanted.args,
        authToken,
      })));
    } catch (error) {
      return asStatgateError(error);
    }
  }

  /** POSTs JSON with the JWT; an expired JWT gets one fresh one (a second 401 is a refusal). */
  async #post(path: string, body: (authToken: string) => object): Promise<unknown> {
    for (let authAttempt = 0; ; authAttempt++) {
      const authToken = await this.#jwt.token(authAttempt > 0);
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), this.#options.requestTimeoutMs);
      let response: Response;
      let reply: unknown;
      try {
        response = await this.#options.fetch(`${this.#options.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body(authToken)),
          signal: abort.signal,
        });
        reply = await response.json().catch(() => undefined);
      } catch (error) {
        throw new StatgateError('network', `subscribe request failed: ${String(error)}`);
      } finally {
        clearTimeout(timer);
      }
      if (response.ok) return reply;
      if (response.status !== 401 || authAttempt > 0) throw errorOf(reply, response.status);
    }
  }
}

function grantOf(reply: unknown): Outcome {
  const { token, signature } = (reply ?? {}) as Partial<Grant>;
  return typeof token === 'string' && typeof signature === 'string'
    ? { token, signature }
    : new StatgateError('bad_reply', 'the gateway granted no token');
}
