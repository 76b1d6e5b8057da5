// A test fixture in a child process (node --import tsx), its stdout read as
// whole lines: a partial last line is not a line yet, which is what lets a
// crash test trust that a printed line was complete before the kill.
import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { withTimeout } from './wait.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface LineChild {
  readonly child: ChildProcessWithoutNullStreams
  /** Everything the child wrote to stderr so far. */
  stderr(): string
}

/** Starts the fixture; past `killAfterMs` (if given) it is SIGKILLed whatever it printed. */
export function spawnLines(
  script: string,
  args: readonly string[],
  onLine: (line: string) => void,
  killAfterMs?: number,
): LineChild {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, stdio: 'pipe' })
  let out = ''
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d
    const lines = out.split('\n')
    out = lines.pop() ?? ''
    for (const l of lines) onLine(l)
  })
  if (killAfterMs !== undefined) {
    const safety = setTimeout(() => child.kill('SIGKILL'), killAfterMs)
    child.once('close', () => clearTimeout(safety))
  }
  return { child, stderr: () => err }
}

/** Waits for the fixture to end: killed with SIGKILL, or exited 0 (else it fails with its stderr). True if killed. */
export async function ended(lc: LineChild, timeoutMs: number, what: string): Promise<boolean> {
  const [code, signal] = (await withTimeout(once(lc.child, 'close'), timeoutMs, `${what} to exit`)) as [
    number | null,
    string | null,
  ]
  assert.ok(signal === 'SIGKILL' || code === 0, `${what} failed: code ${code} signal ${signal}\n${lc.stderr()}`)
  return signal === 'SIGKILL'
}
