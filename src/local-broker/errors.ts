// Typed errors of the local broker. Callers branch on `code`, never on text.
export type LocalBrokerErrorCode =
  | 'EDGE_ERR_BROKER_LISTEN_FAILED'
  | 'EDGE_ERR_BROKER_STOPPED'
  | 'EDGE_ERR_BROKER_TLS'
  | 'EDGE_ERR_BROKER_ACL_INVALID'
  | 'EDGE_ERR_BROKER_PASSWORD_FILE'
  | 'EDGE_ERR_BROKER_ACL_DENIED'

export class LocalBrokerError extends Error {
  override readonly name: string = 'LocalBrokerError'
  constructor(
    readonly code: LocalBrokerErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}
