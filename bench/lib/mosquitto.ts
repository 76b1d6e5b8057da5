// Launcher for Mosquitto, the reference broker: a throwaway config in a temp dir, loopback only.
//
// `max_connections -1` (unlimited) and a raised fd limit, so 2,000 clients fit; no
// persistence, so nothing is written to disk. Ready when the port accepts TCP.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import type { BrokerProcess } from './bare-aedes.js'
import { spawnTracked } from './proc.js'
import { tcpAccepts, waitFor } from './wait.js'

export const MOSQUITTO_BIN = process.env.EDGE_BENCH_MOSQUITTO ?? '/usr/sbin/mosquitto'

export interface MosquittoOptions {
  port: number
  fdLimit?: number
}

export async function startMosquitto(opts: MosquittoOptions): Promise<BrokerProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-mosquitto-'))
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(
    conf,
    [
      `listener ${opts.port} 127.0.0.1`,
      'allow_anonymous true',
      'max_connections -1',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      // As root, mosquitto drops to user 'mosquitto' unless told otherwise; stay who we are.
      `user ${userInfo().username}`,
      '',
    ].join('\n'),
  )
  const proc = await spawnTracked(MOSQUITTO_BIN, ['-c', conf], { name: 'mosquitto', fdLimit: opts.fdLimit ?? 65_536 })
  try {
    await waitFor(() => tcpAccepts(opts.port), {
      what: 'mosquitto to accept connections',
      timeoutMs: 20_000,
      abort: proc.exited,
    })
  } catch (err) {
    await proc.stop('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`${(err as Error).message}\n${proc.output()}`)
  }
  return {
    name: 'mosquitto',
    pid: proc.pid,
    port: opts.port,
    proc,
    async stop() {
      try {
        await proc.stop('SIGTERM', 10_000)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  }
}
