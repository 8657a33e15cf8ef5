/**
 * Subscriptions. One `Shared` per (query, args) is what the gateway knows as one subscription;
 * every `subscribe()` call for it gets its own `Handle` (its callback, its error handling, its
 * `ready` promise and iterators), so two parts of a page asking for the same value share one
 * registration and one stream of updates.
 *
 * A shared subscription's progress on the current connection is one state (`State`), from
 * needing a token to receiving values; the status handles report is derived from it.
 */

import { stableStringify } from './key.js';
import { StatgateError } from './protocol.js';

/** A subscription's status: waiting for its value on this connection, receiving values,
 * refused for good, or ended by `unsubscribe()` / `close()`. */
export type SubscriptionStatus = 'subscribing' | 'subscribed' | 'error' | 'unsubscribed';

/** Where one shared subscription stands on the current connection. */
export type State =
  /** Needs a token, asked for when a socket opens. */
  | { kind: 'idle' }
  /** A token request is queued, in flight or waiting to be retried. */
  | { kind: 'registering' }
  /** Holds a token for the next subscribe frame. */
  | { kind: 'registered'; token: string }
  /** Subscribed on this socket; the snapshot is on its way. */
  | { kind: 'sent' }
  /** Values arrive on this socket. */
  | { kind: 'live' }
  /** Refused for good (unknown query, bad args, forbidden). */
  | { kind: 'failed'; error: StatgateError }
  /** Nobody follows it any more. */
  | { kind: 'closed' };

export interface SubscribeOptions {
  /** Refusals (`invalid_args`, `forbidden`, `unknown_query`, …) and `recompute_failed` events.
   * Without it errors go to the client's `onError`, and without that to `console.error`. */
  onError?: (error: StatgateError) => void;
  /** Every change of `status`. */
  onStatus?: (status: SubscriptionStatus) => void;
}

/** One `subscribe()` call. Iterating it yields values (the newest one whenever the loop is
 * slower than the updates); leaving the loop unsubscribes. */
export interface Subscription<R> extends AsyncIterable<R> {
  readonly queryName: string;
  /** The canonical signature, once the gateway has accepted the subscription. */
  readonly signature: string | undefined;
  /** The latest value, or `undefined` before the first one. */
  readonly value: R | undefined;
  readonly status: SubscriptionStatus;
  /** The latest error, until a value arrives. */
  readonly error: StatgateError | undefined;
  /** The first value; rejected when an error comes first or the subscription ends. */
  readonly ready: Promise<R>;
  /** Stops updates; idempotent. */
  unsubscribe(): void;
}

/** What a handle needs from its client. */
export interface Owner {
  unfollow(shared: Shared, handle: Handle<unknown>): void;
  /** Passes an error to the client-wide `onError`; false when there is none. */
  report(error: StatgateError, subscription: Subscription<unknown>): boolean;
}

/** Receives what a handle receives: its `ready` promise, or one of its iterators. */
interface Sink {
  value(value: unknown): void;
  error(error: StatgateError, final: boolean): void;
  end(): void;
}

const ended = (): StatgateError => new StatgateError('unsubscribed', 'the subscription ended');

export class Shared {
  state: State = { kind: 'idle' };
  signature: string | undefined;
  value: unknown;
  hasValue = false;
  error: StatgateError | undefined;
  /** Versions restart per connection (another node may serve the next one). */
  version = 0;
  /** Stale-token retries left before an `unauthorized` refusal is final (renewed by a value). */
  retries = 3;
  readonly handles = new Set<Handle<unknown>>();

  constructor(
    readonly key: string,
    readonly queryName: string,
    readonly args: object,
    /** The `id` of its subscribe frames, which the gateway echoes in errors. */
    readonly id: number,
  ) {}

  get status(): SubscriptionStatus {
    const { kind } = this.state;
    return kind === 'live' ? 'subscribed' : kind === 'failed' ? 'error' : kind === 'closed' ? 'unsubscribed' : 'subscribing';
  }

  setState(state: State): void {
    const before = this.status;
    this.state = state;
    if (this.status !== before) for (const handle of [...this.handles]) handle.statusChanged();
  }

  /** A value from the gateway; handles hear of it only when it differs from the one held. */
  update(version: number, value: unknown): void {
    if (version <= this.version) return;
    this.version = version;
    const changed = !this.hasValue || stableStringify(this.value) !== stableStringify(value);
    this.value = value;
    this.hasValue = true;
    this.error = undefined;
    this.retries = 3;
    this.setState({ kind: 'live' });
    if (changed) for (const handle of [...this.handles]) handle.update(value);
  }

  /** An error; `final` ones end the subscription. */
  fail(error: StatgateError, final: boolean): void {
    this.error = error;
    if (final) this.setState({ kind: 'failed', error });
    for (const handle of [...this.handles]) handle.fail(error, final);
  }

  /** Ends it for every handle (the client closed). */
  end(): void {
    this.setState({ kind: 'closed' });
    for (const handle of [...this.handles]) handle.end();
    this.handles.clear();
  }
}

export class Handle<R> implements Subscription<R> {
  readonly #sinks = new Set<Sink>();
  #logged = false;
  #first: Promise<R> | undefined;
  /** `onUpdate`, typed so that any handle is a `Handle<unknown>` for its shared subscription. */
  readonly #onUpdate: ((value: never) => void) | undefined;

  readonly #shared: Shared;
  readonly #owner: Owner;
  readonly #options: SubscribeOptions;

  constructor(shared: Shared, owner: Owner, onUpdate: ((value: R) => void) | undefined, options: SubscribeOptions) {
    this.#shared = shared;
    this.#owner = owner;
    this.#options = options;
    this.#onUpdate = onUpdate as ((value: never) => void) | undefined;
  }

  get queryName(): string {
    return this.#shared.queryName;
  }

  get signature(): string | undefined {
    return this.#shared.signature;
  }

  get value(): R | undefined {
    return this.#shared.hasValue ? (this.#shared.value as R) : undefined;
  }

  get status(): SubscriptionStatus {
    return this.#shared.handles.has(this) ? this.#shared.status : 'unsubscribed';
  }

  get error(): StatgateError | undefined {
    return this.#shared.error;
  }

  get ready(): Promise<R> {
    this.#first ??= new Promise<R>((resolve, reject) => {
      if (this.#shared.hasValue) return resolve(this.value as R);
      if (this.status !== 'subscribing') return reject(this.error ?? ended());
      // Settled once: later values or errors are none of its business.
      const sink: Sink = {
        value: (value) => {
          this.#sinks.delete(sink);
          resolve(value as R);
        },
        error: (error) => {
          this.#sinks.delete(sink);
          reject(error);
        },
        end: () => reject(ended()),
      };
      this.#sinks.add(sink);
    });
    return this.#first;
  }

  [Symbol.asyncIterator](): AsyncIterator<R> {
    let latest: { value: R } | undefined = this.#shared.hasValue ? { value: this.value as R } : undefined;
    let failure = this.#shared.state.kind === 'failed' ? this.#shared.error : undefined;
    let done = this.status === 'unsubscribed';
    let wake: (() => void) | undefined;
    const sink: Sink = {
      value: (value) => {
        latest = { value: value as R };
        wake?.();
      },
      error: (error, final) => {
        if (final) failure = error;
        wake?.();
      },
      end: () => {
        done = true;
        wake?.();
      },
    };
    this.#sinks.add(sink);
    return {
      next: async () => {
        while (!latest && !failure && !done) await new Promise<void>((woken) => (wake = woken));
        if (latest) {
          const { value } = latest;
          latest = undefined;
          return { value, done: false };
        }
        this.#sinks.delete(sink);
        if (failure) throw failure;
        return { value: undefined, done: true };
      },
      return: async () => {
        this.unsubscribe();
        return { value: undefined, done: true };
      },
    };
  }

  unsubscribe(): void {
    this.#owner.unfollow(this.#shared, this);
    this.end();
  }

  update(value: unknown): void {
    this.#onUpdate?.(value as never);
    for (const sink of [...this.#sinks]) sink.value(value);
  }

  /** Routes an error: this subscription's `onError`, else the client's, else `console.error` once. */
  fail(error: StatgateError, final: boolean): void {
    for (const sink of [...this.#sinks]) sink.error(error, final);
    if (this.#options.onError) {
      this.#options.onError(error);
    } else if (!this.#owner.report(error, this) && !this.#logged) {
      this.#logged = true;
      console.error(`statgate: ${this.queryName}: ${error.message}`, error);
    }
  }

  statusChanged(): void {
    this.#options.onStatus?.(this.status);
  }

  end(): void {
    for (const sink of [...this.#sinks]) sink.end();
    this.#sinks.clear();
  }
}
