// Typed errors of the Node-RED component and its CLI side. Callers and tests
// branch on `code`, never on message text.
export type NodeRedErrorCode =
  /** `nodeRed.enabled` is false in the config (or the agent runs without it). */
  | 'EDGE_ERR_NODERED_DISABLED'
  /** The node-red package is not installed (install the edge-agent-node-red add-on). */
  | 'EDGE_ERR_NODERED_NOT_INSTALLED'
  /** Node-RED did not start (port taken, unreadable state files). */
  | 'EDGE_ERR_NODERED_START_FAILED'
  /** A flow file that is not a JSON array of nodes with unique string ids and types. */
  | 'EDGE_ERR_NODERED_FLOWS_INVALID'
  /** The running agent's Node-RED did not answer. */
  | 'EDGE_ERR_NODERED_UNREACHABLE'
  /** Node-RED refused the flows (HTTP status and its message in the error). */
  | 'EDGE_ERR_NODERED_DEPLOY_FAILED'
  /** A user name or password that cannot be stored (empty, too long, bad characters). */
  | 'EDGE_ERR_NODERED_USER_INVALID'
  /** An edge out publish larger than nodeRed.maxPayloadBytes (the node reports the error). */
  | 'EDGE_ERR_NODERED_PAYLOAD_TOO_LARGE'
  /** An edge out publish the ACL refuses to the flow identity (nodeRed.identity). */
  | 'EDGE_ERR_NODERED_PUBLISH_DENIED'
  /** A state file (users, credential secret, CLI token) is corrupt or unreadable. */
  | 'EDGE_ERR_NODERED_STATE'

export class NodeRedError extends Error {
  override readonly name = 'NodeRedError'
  constructor(
    readonly code: NodeRedErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}
