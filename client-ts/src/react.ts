/**
 * @statgate/client/react — `useStat(client, queryName, args)`: the live value of a query in a
 * React component, as `{ value, status, error }`.
 *
 * Built on `useSyncExternalStore`, so every component sees the same value in the same render
 * (no tearing) under concurrent rendering. Components asking for the same query and args share
 * one store and one client subscription, opened by the first to mount and closed when the last
 * unmounts. The close waits a microtask, so strict mode's unmount-and-remount does not
 * unsubscribe and subscribe again. Server rendering never subscribes (`useSyncExternalStore`
 * subscribes in effects only), so no socket is opened there; it renders `status: 'subscribing'`.
 */

import { useCallback, useSyncExternalStore } from 'react';
import type { StatgateClient } from './client.js';
import { subscriptionKey } from './key.js';
import type { StatgateError } from './protocol.js';
import type { SubscriptionStatus } from './subscription.js';
import type { AnyQueries, ArgsOf, QueryName, ResultOf } from './types.js';

export interface StatState<R> {
  /** The latest value, or `undefined` before the first one. */
  value: R | undefined;
  status: SubscriptionStatus;
  /** The latest error (a refusal, or a failed recompute), until a value arrives. */
  error: StatgateError | undefined;
}

/** One (client, query, args) followed by mounted components. */
interface Store {
  state: StatState<unknown>;
  readonly listeners: Set<() => void>;
  stop(): void;
}

const BEFORE_FIRST_VALUE: StatState<never> = Object.freeze({ value: undefined, status: 'subscribing', error: undefined });
const stores = new WeakMap<object, Map<string, Store>>();

export function useStat<Q = AnyQueries, N extends QueryName<Q> = QueryName<Q>>(
  client: StatgateClient<Q>,
  queryName: N,
  args: ArgsOf<Q, N>,
): StatState<ResultOf<Q, N>> {
  const key = subscriptionKey(queryName, args);
  // `args` is a new object on every render; the key says when it really changed.
  const subscribe = useCallback((listener: () => void) => follow(client, key, queryName, args, listener), [client, key]);
  const snapshot = (): StatState<ResultOf<Q, N>> =>
    (stores.get(client)?.get(key)?.state as StatState<ResultOf<Q, N>> | undefined) ?? BEFORE_FIRST_VALUE;
  return useSyncExternalStore(subscribe, snapshot, () => BEFORE_FIRST_VALUE);
}

/** Adds `listener` to the store of (client, key), opening it first; returns the removal. */
function follow<Q>(
  client: StatgateClient<Q>,
  key: string,
  queryName: QueryName<Q>,
  args: ArgsOf<Q, QueryName<Q>>,
  listener: () => void,
): () => void {
  let byKey = stores.get(client);
  if (!byKey) stores.set(client, (byKey = new Map()));
  const store = byKey.get(key) ?? open(client, queryName, args);
  byKey.set(key, store);
  store.listeners.add(listener);
  return () => {
    store.listeners.delete(listener);
    queueMicrotask(() => {
      if (store.listeners.size > 0 || byKey.get(key) !== store) return;
      byKey.delete(key);
      store.stop();
    });
  };
}

function open<Q>(client: StatgateClient<Q>, queryName: QueryName<Q>, args: ArgsOf<Q, QueryName<Q>>): Store {
  const store: Store = { state: BEFORE_FIRST_VALUE, listeners: new Set(), stop: () => {} };
  const publish = (): void => {
    const { value, status, error } = subscription ?? store.state;
    const { state } = store;
    if (state.value === value && state.status === status && state.error === error) return;
    store.state = { value, status, error };
    for (const listener of [...store.listeners]) listener();
  };
  let subscription: ReturnType<typeof client.subscribe> | undefined;
  try {
    subscription = client.subscribe(queryName, args, publish, { onError: publish, onStatus: publish });
    store.stop = () => subscription?.unsubscribe();
  } catch (error) {
    // A closed client, or none able to open a socket.
    store.state = { value: undefined, status: 'error', error: error as StatgateError };
  }
  publish();
  return store;
}
