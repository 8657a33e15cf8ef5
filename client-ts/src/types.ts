/**
 * Typing of queries. `statgate codegen ts` writes a `StatgateQueries` interface mapping every
 * query of a registry to its args and result; given as the client's type parameter, it makes
 * a wrong query name, arg name or arg type a compile error.
 */

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
