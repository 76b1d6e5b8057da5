// One process's resources from /proc, and the size of its data files.
//
// Only the given PID is read. Database files are found by name in the data
// dir (*.db and their -wal files), so a change in how the store splits its
// files does not blind the soak.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

const TICKS_PER_SEC = 100

export interface ProcSample {
  readonly rssBytes: number
  /** User + system CPU time, seconds, since the process started. */
  readonly cpuSec: number
}

export function readProc(pid: number): ProcSample | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(rest[11]) + Number(rest[12])
    const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0)
    return { rssBytes: rssKb * 1024, cpuSec: ticks / TICKS_PER_SEC }
  } catch {
    return undefined
  }
}

export interface DataFiles {
  readonly dbBytes: number
  readonly walBytes: number
  /** Certificates kept by the local CA (issued/). */
  readonly issuedCerts: number
}

export function readDataFiles(dataDir: string): DataFiles {
  let dbBytes = 0
  let walBytes = 0
  let names: string[] = []
  try {
    names = readdirSync(dataDir)
  } catch {
    // not created yet
  }
  for (const n of names) {
    const size = (): number => {
      try {
        return statSync(join(dataDir, n)).size
      } catch {
        return 0
      }
    }
    if (n.endsWith('.db')) dbBytes += size()
    else if (n.endsWith('.db-wal')) walBytes += size()
  }
  let issuedCerts = 0
  try {
    issuedCerts = readdirSync(join(dataDir, 'certs', 'issued')).length
  } catch {
    // no CA yet
  }
  return { dbBytes, walBytes, issuedCerts }
}
