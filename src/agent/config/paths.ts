// Paths derived from the config, shared by `run` and the commands that edit
// state files, so that both always mean the same file.
import { join } from 'node:path'
import type { AgentConfig } from './schema.js'

/** broker.auth.passwordFile, else <dataDir>/passwd. */
export function passwordFilePath(config: AgentConfig): string {
  return config.broker.auth.passwordFile ?? join(config.dataDir, 'passwd')
}
