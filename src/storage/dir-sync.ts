// Making names durable. An fsync of a file saves its data, not the
// directory entry that names it: a file created (or renamed) after the
// directory was last fsync'd can vanish in a power cut together with
// everything fsync'd into it. SQLite syncs the directory when it creates a
// -wal, not when the main file is created; the data directory and the
// database file are created by database.ts (and the agent), which make their
// names durable with these; quarantine.ts syncs its renames the same way
// (test/integration/powercut found the data directory gone after a cut).
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

/** fsync(2) a directory, so that the entries created or renamed in it survive a power cut. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** mkdir -p whose every new component is durable (its parent fsync'd). */
export function mkdirDurable(dir: string, mode: number): void {
  const abs = resolve(dir)
  if (existsSync(abs)) return
  mkdirDurable(dirname(abs), mode)
  mkdirSync(abs, { mode })
  fsyncDir(dirname(abs))
}
