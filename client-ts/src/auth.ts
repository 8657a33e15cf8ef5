/**
 * The caller's JWT: asked for through `getAuthToken` when none is held or the one held is
 * about to expire, once at a time however many parts of the client need it at once.
 */

export class JwtSource {
  #jwt: string | undefined;
  /** The held JWT's `exp` in milliseconds (`Infinity` when it has none). */
  expiresAt = 0;
  #request: Promise<string> | undefined;

  readonly #getAuthToken: () => string | Promise<string>;
  readonly #marginMs: number;

  constructor(getAuthToken: () => string | Promise<string>, marginMs: number) {
    this.#getAuthToken = getAuthToken;
    this.#marginMs = marginMs;
  }

  /** A JWT that is not about to expire; `fresh` forces a new one (after a 401). */
  token(fresh = false): Promise<string> {
    if (!fresh && this.#jwt && Date.now() < this.expiresAt - this.#marginMs) return Promise.resolve(this.#jwt);
    this.#request ??= Promise.resolve()
      .then(() => this.#getAuthToken())
      .then((jwt) => {
        this.#jwt = jwt;
        this.expiresAt = jwtExpiry(jwt);
        return jwt;
      })
      .finally(() => {
        this.#request = undefined;
      });
    return this.#request;
  }

  /** When to send the socket a fresh JWT: `marginMs` before expiry, or never (`Infinity`). */
  refreshDueIn(): number {
    return Math.max(0, this.expiresAt - this.#marginMs - Date.now());
  }
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
