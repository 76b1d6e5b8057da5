// A test fixture in a child process (node --import tsx), its stdout read as
// whole lines: a partial last line is not a line yet, which is what lets a
// crash test trust that a printed line was complete before the kill.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface LineChild {
  readonly child: ChildProcessWithoutNullStreams
  /** Everything the child wrote to stderr so far. */
  stderr(): string
}

export function spawnLines(script: string, args: readonly string[], onLine: (line: string) => void): LineChild {
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
  return { child, stderr: () => err }
}
