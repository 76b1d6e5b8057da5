import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Scope } from './scope.js'

/**
 * A fresh temp dir removed after the test, pass or fail. After-hooks run in
 * the order they were added, so a component made on this dir may still be
 * writing a file in it (a timer's save) while it is removed: retried.
 */
export function tmpDir(t: Scope, prefix = 'edge-agent-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.after(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
  return dir
}
