// Paths derived from the config, shared by `run` and the commands that edit
// state files, so that both always mean the same file.
import { join } from 'node:path'
import type { AgentConfig } from './schema.js'

/** broker.auth.passwordFile, else <dataDir>/passwd. */
export function passwordFilePath(config: AgentConfig): string {
  return config.broker.auth.passwordFile ?? join(config.dataDir, 'passwd')
}

/**
 * Whether the agent needs its local CA: an mqtts listener with its own
 * certificate, key and CA (an external PKI) does not; any other one takes
 * what it lacks from the local CA.
 */
export function needsLocalCa(config: Readonly<AgentConfig>): boolean {
  return config.broker.listeners.some(
    (l) => l.protocol === 'mqtts' && (l.certFile === undefined || l.keyFile === undefined || l.caFile === undefined),
  )
}
