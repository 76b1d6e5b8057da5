// Checks of files the config names, made when the config is loaded so that
// `config validate` refuses what `run` would: private keys that others can
// read, and an ACL file that does not parse.
import { readFileSync, statSync } from 'node:fs'
import { AclError, parseMosquittoAcl } from '../../local-broker/index.js'
import type { AgentConfig } from './schema.js'
import type { SemanticIssue } from './semantic.js'

export function fileIssues(config: AgentConfig): SemanticIssue[] {
  const issues: SemanticIssue[] = []
  config.broker.listeners.forEach((l, i) => {
    if (l.keyFile === undefined) return
    let mode: number
    try {
      mode = statSync(l.keyFile).mode
    } catch (err) {
      issues.push({
        path: ['broker', 'listeners', i, 'keyFile'],
        message: `cannot read ${l.keyFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      })
      return
    }
    if ((mode & 0o077) !== 0) {
      issues.push({
        path: ['broker', 'listeners', i, 'keyFile'],
        message: `${l.keyFile} is accessible to group or others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}): chmod 600 it (or 640 with a group only the agent is in is still refused: a private key is the owner's alone)`,
      })
    }
  })
  const aclFile = config.broker.acl.file
  if (aclFile !== undefined) {
    try {
      parseMosquittoAcl(readFileSync(aclFile, 'utf8'), aclFile)
    } catch (err) {
      if (err instanceof AclError) issues.push({ path: ['broker', 'acl', 'file'], message: err.message })
      else
        issues.push({
          path: ['broker', 'acl', 'file'],
          message: `cannot read ${aclFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
        })
    }
  }
  return issues
}
