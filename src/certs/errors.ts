// Typed errors of the certificate authority and its services. Callers and
// tests branch on `code`, never on message text.
export type CertsErrorCode =
  /** No local CA in the state directory: run `edge-agent certs init` or `certs import-ca`. */
  | 'EDGE_ERR_CERT_CA_MISSING'
  /** `certs init` over an existing CA (use --force to replace it). */
  | 'EDGE_ERR_CERT_CA_EXISTS'
  /** A CA file is unreadable, malformed or does not match its key. */
  | 'EDGE_ERR_CERT_CA_INVALID'
  /** Signing failed (key, clock window, CA expired). */
  | 'EDGE_ERR_CERT_ISSUE_FAILED'
  /** A CSR that does not parse, has a bad signature or an unsupported key. */
  | 'EDGE_ERR_CERT_CSR_INVALID'
  /** A device id that cannot name a topic space (empty, too long, + # / NUL). */
  | 'EDGE_ERR_CERT_IDENTITY_INVALID'
  /** The wall clock is not trusted (earlier than the last known good time, or jumped). */
  | 'EDGE_ERR_CERT_CLOCK_SUSPICIOUS'
  /** Nothing to revoke, or no such certificate. */
  | 'EDGE_ERR_CERT_NOT_FOUND'
  /** A state file is corrupt or has unsafe permissions. */
  | 'EDGE_ERR_CERT_STATE'
  /** The gateway answered a renewal request with an error (see `error`, `retryAfterSec`). */
  | 'EDGE_ERR_CERT_RENEWAL_REFUSED'
  /** No answer to a renewal request in time, or the answer did not check out. */
  | 'EDGE_ERR_CERT_RENEWAL_FAILED'

export class CertsError extends Error {
  override readonly name = 'CertsError'
  constructor(
    readonly code: CertsErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/** A renewal reply with status "error"; the protocol's code stays data. */
export class RenewalRefusedError extends CertsError {
  constructor(
    /** Protocol error code, e.g. 'too-early' (protocol.ts RenewalErrorCode). */
    readonly error: string,
    message: string,
    readonly retryAfterSec: number | undefined,
  ) {
    super('EDGE_ERR_CERT_RENEWAL_REFUSED', message)
  }
}
