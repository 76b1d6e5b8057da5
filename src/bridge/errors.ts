// Errors of the bridge component. Callers branch on `code`, never on the
// message text; protocol facts (CONNACK return codes, MQTT 5 reason codes)
// stay as data in `reasonCode`, never formatted into the message only.
export type BridgeErrorCode =
  /** A bridge rule (or the rule set of one upstream) is invalid; `path` names the key. */
  | 'EDGE_ERR_BRIDGE_RULE_INVALID'
  /** The upstream refused the connection (CONNACK ≠ 0) or closed it with a reason code. */
  | 'EDGE_ERR_BRIDGE_UPSTREAM_REJECTED'
  /** The connection to the upstream failed or was lost (transport level). */
  | 'EDGE_ERR_BRIDGE_CONNECTION_LOST'
  /** The upstream broke the MQTT protocol (unexpected packet, bad packet id). */
  | 'EDGE_ERR_BRIDGE_PROTOCOL'
  /** The bridge is stopped or stopping. */
  | 'EDGE_ERR_BRIDGE_STOPPED'
  /** A message in flight expired before it could be sent again (internal: counted as a drop 'expired'). */
  | 'EDGE_ERR_BRIDGE_EXPIRED'
  /** A forwarding loop between agents was detected; forwarding to that upstream is paused. */
  | 'EDGE_ERR_BRIDGE_LOOP_DETECTED'
  /** A certificate, key or CA file named in the upstream config cannot be read. */
  | 'EDGE_ERR_BRIDGE_TLS_FILES'

export interface BridgeErrorOptions extends ErrorOptions {
  /** Key path below the upstream, e.g. ['rules', 2, 'topic'], for config errors. */
  readonly path?: readonly (string | number)[]
  /** CONNACK return code (3.1.1) or reason code (MQTT 5), when the upstream sent one. */
  readonly reasonCode?: number
}

export class BridgeError extends Error {
  override readonly name = 'BridgeError'
  readonly path: readonly (string | number)[]
  readonly reasonCode: number | undefined

  constructor(
    readonly code: BridgeErrorCode,
    message: string,
    options: BridgeErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.path = options.path ?? []
    this.reasonCode = options.reasonCode
  }
}

export function isBridgeError(err: unknown, code?: BridgeErrorCode): err is BridgeError {
  return err instanceof BridgeError && (code === undefined || err.code === code)
}
