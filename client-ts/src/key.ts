/**
 * The identity of a subscription on the client: its query name and its args as JSON with
 * sorted keys, so that `{a, b}` and `{b, a}` share one server-side subscription.
 */

export function subscriptionKey(queryName: string, args: unknown): string {
  return `${queryName}\u0000${stableStringify(args)}`;
}

/** JSON with object keys sorted, so equal values give equal strings whatever their order. */
export function stableStringify(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'undefined';
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  const record = value as Record<string, unknown>;
  return `{${Object.keys(record)
    .sort()
    .map((key) => `${JSON.stringify(key)}:${stableStringify(record[key])}`)
    .join(',')}}`;
}
