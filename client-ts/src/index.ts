/**
 * @statgate/client — live query values from a statgate gateway, in browsers and Node 20+.
 * React bindings are in `@statgate/client/react`.
 */

export { createClient, type ClientOptions, type StatgateClient } from './client.js';
export { StatgateError } from './protocol.js';
export type { Subscription, SubscribeOptions, SubscriptionStatus } from './subscription.js';
export type { Status, WebSocketConstructor, WebSocketLike } from './transport.js';
export type { AnyQueries, ArgsOf, QueryName, QueryShape, ResultOf } from './types.js';
