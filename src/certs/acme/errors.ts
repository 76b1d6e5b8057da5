// Errors of the gateway's own ACME certificate. A class of its own (not
// CertsError's union) so that the codes can grow without touching the local
// CA's list; callers still branch on `code` only.
export type AcmeErrorCode =
  /** The ACME directory could not be reached (network, TLS trust, timeout). */
  | 'EDGE_ERR_ACME_UNREACHABLE'
  /** The directory URL answered, but not with an ACME directory. */
  | 'EDGE_ERR_ACME_NOT_ACME'
  /** The CA refused the account or the order (rate limit, unauthorized identifier, bad EAB, ...). */
  | 'EDGE_ERR_ACME_REFUSED'
  /** A challenge could not be served or was not validated. */
  | 'EDGE_ERR_ACME_CHALLENGE_FAILED'
  /** The issued certificate does not check out (chain, key, identifiers, validity). */
  | 'EDGE_ERR_ACME_CERT_INVALID'
  /** An upstream refused the new certificate in a test handshake; the old one stays. */
  | 'EDGE_ERR_ACME_UPSTREAM_REFUSED'
  /** Writing the new certificate or the account failed (disk full, permissions). */
  | 'EDGE_ERR_ACME_WRITE_FAILED'
  /** The gateway certificate has expired; upstreams using it are held. */
  | 'EDGE_ERR_ACME_EXPIRED'
  /** A state file of the ACME account or certificate is unreadable or corrupt. */
  | 'EDGE_ERR_ACME_STATE'

export class AcmeError extends Error {
  override readonly name = 'AcmeError'
  constructor(
    readonly code: AcmeErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

export function isAcmeError(err: unknown): err is AcmeError {
  return err instanceof AcmeError
}
