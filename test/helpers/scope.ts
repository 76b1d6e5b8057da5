// Cleanup registration shared by helpers: a test's own context, or a file-wide
// scope for a resource shared by every test of one file (e.g. one agent).
import { after } from 'node:test'

export interface Scope {
  after(fn: () => unknown): void
}

/** A scope whose cleanups run, in reverse order, after the file's last test. */
export function fileScope(): Scope {
  const cleanups: (() => unknown)[] = []
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })
  return { after: (fn) => void cleanups.push(fn) }
}
