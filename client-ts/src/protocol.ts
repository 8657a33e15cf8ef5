/**
 * What the gateway and the client say to each other: the WebSocket subprotocol, its frames
 * and events, the error shape of the HTTP endpoints, and which failures are worth retrying.
 * Everything else in the client is built on these; the gateway's README documents them.
 */

export const PROTOCOL = 'statgate.realtime.v1';
/** `WebSocket.OPEN`, which Node's `ws` and the browser share. */
export const OPEN = 1;
/** Close code of an expired JWT: retrying the same socket cannot help without a fresh one. */
export const AUTH_EXPIRED = 4001;
/** HTTP statuses worth retrying (the rest are the caller's mistake or a refusal). */
const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);

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

/** The gateway's error body, `{"error":{"code","message","details"}}`, as a `StatgateError`. */
export function errorOf(body: unknown, status: number | undefined): StatgateError {
  const error = (body as { error?: { code?: string; message?: string; details?: unknown } } | undefined)?.error;
  return new StatgateError(
    error?.code ?? 'http_error',
    error?.message ?? `the gateway answered HTTP ${status}`,
    status,
    error?.details,
  );
}

export function asStatgateError(error: unknown): StatgateError {
  return error instanceof StatgateError ? error : new StatgateError('error', String(error));
}

export function isRetryable(error: StatgateError): boolean {
  return error.status === undefined ? error.code === 'network' : RETRYABLE_STATUS.has(error.status);
}

/** A server → client event. */
export interface ServerEvent {
  event?: string;
  payload?: Record<string, unknown>;
}

/** The event in a text message, or `undefined` for anything else. */
export function parseEvent(data: unknown): ServerEvent | undefined {
  if (typeof data !== 'string') return undefined;
  try {
    return JSON.parse(data) as ServerEvent;
  } catch {
    return undefined;
  }
}

export const subscribeFrame = (token: string, id: number): string => JSON.stringify({ type: 'subscribe', token, id });
export const unsubscribeFrame = (signature: string): string => JSON.stringify({ type: 'unsubscribe', signature });
export const authFrame = (authToken: string): string => JSON.stringify({ type: 'auth', authToken });
/** Liveness probe; any message from the server (a `pong` first) proves the socket alive. */
export const PING = 'ping';
