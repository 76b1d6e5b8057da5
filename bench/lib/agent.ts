// Launcher for the real edge-agent process (dist/agent/main.js, built by `npm run build`).
//
// Writes a throwaway site config (loopback listener and admin port, data dir in a temp
// dir, maxConnections 10 000), starts `node [flags] dist/agent/main.js run --config FILE`
// and waits for GET /healthz = 200. The environment mirrors the systemd unit
// (NODE_ENV, NODE_OPTIONS and MALLOC_* from systemd/edge-agent.service), so the figures are
// "as deployed". SIGTERM must stop it with exit code 0.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { BrokerProcess } from './bare-aedes.js'
import { repoRoot, spawnTracked, type Started } from './proc.js'
import { waitFor } from './wait.js'

/** The agent entry point; EDGE_BENCH_AGENT_MAIN benchmarks another build of it (e.g. a bundled release). */
export const AGENT_MAIN = process.env.EDGE_BENCH_AGENT_MAIN ?? join(repoRoot, 'dist/agent/main.js')
const UNIT_FILE = join(repoRoot, 'systemd/edge-agent.service')

export interface AgentOptions {
  port: number
  adminPort: number
  /** Extra node flags after the deployed ones. */
  nodeFlags?: readonly string[]
  /** Skip the environment taken from the systemd unit (lever experiments). Default false. */
  plainEnv?: boolean
  fdLimit?: number
  /** Extra environment (e.g. the probe's), and an IPC channel for it. */
  env?: NodeJS.ProcessEnv
  ipc?: boolean
  maxConnections?: number
}

/**
 * Extra node arguments for the agent, for investigation only (e.g. `--cpu-prof`,
 * which NODE_OPTIONS does not accept): EDGE_BENCH_AGENT_NODE_FLAGS, split on spaces.
 */
export function agentNodeArgs(): string[] {
  return (process.env.EDGE_BENCH_AGENT_NODE_FLAGS ?? '').split(' ').filter((a) => a !== '')
}

/**
 * NODE_ENV, NODE_OPTIONS and MALLOC_* from the unit's `Environment=` lines, as systemd would set them.
 * Only these: the rest of the unit (User=, sandboxing) does not change memory use or speed.
 */
export function deployedEnv(): Record<string, string> {
  if (!existsSync(UNIT_FILE)) return {}
  const out: Record<string, string> = {}
  for (const line of readFileSync(UNIT_FILE, 'utf8').split('\n')) {
    const m = /^\s*Environment=(?:"([^"]*)"|(.*))\s*$/.exec(line)
    const assignment = m?.[1] ?? m?.[2]
    if (assignment === undefined) continue
    const eq = assignment.indexOf('=')
    const key = assignment.slice(0, eq)
    if (key === 'NODE_ENV' || key === 'NODE_OPTIONS' || key.startsWith('MALLOC_')) out[key] = assignment.slice(eq + 1)
  }
  return out
}

function agentConfig(opts: AgentOptions, dataDir: string): string {
  return [
    'site: { name: bench, level: 2 }',
    `dataDir: ${JSON.stringify(dataDir)}`,
    'log: { level: warn }',
    `admin: { host: 127.0.0.1, port: ${opts.adminPort} }`,
    'broker:',
    '  listeners:',
    `    - { protocol: mqtt, host: 127.0.0.1, port: ${opts.port} }`,
    `  limits: { maxConnections: ${opts.maxConnections ?? 10_000} }`,
    '',
  ].join('\n')
}

/** GET a JSON document from the admin API; no keep-alive, so the agent holds no idle admin socket. */
export function getJson(port: number, path: string, timeoutMs = 5_000): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = get(
      { host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs, headers: { connection: 'close' } },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown = text
          try {
            body = JSON.parse(text)
          } catch {
            // not JSON (e.g. healthz text)
          }
          resolve({ status: res.statusCode ?? 0, body })
        })
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)))
    req.on('error', reject)
  })
}

export interface LaunchOptions {
  readonly configFile: string
  readonly adminPort: number
  /** The run's temp dir: removed if the agent never becomes ready. */
  readonly dir: string
  readonly nodeFlags?: readonly string[]
  readonly fdLimit?: number
  readonly ipc?: boolean
  /** Laid over process.env (e.g. deployedEnv()). */
  readonly env: NodeJS.ProcessEnv
  readonly onStdout?: (chunk: string) => void
  /** Another build's main.js (default AGENT_MAIN). */
  readonly main?: string
}

/**
 * `node [flags] dist/agent/main.js run --config FILE`, ready once GET /healthz
 * answers 200. EDGE_BENCH_AGENT_NODE_FLAGS is added to the flags. If it does
 * not become ready: killed, its dir removed, and the error carries its output.
 */
export async function launchAgent(o: LaunchOptions): Promise<Started> {
  const proc = await spawnTracked(
    process.execPath,
    [...(o.nodeFlags ?? []), ...agentNodeArgs(), o.main ?? AGENT_MAIN, 'run', '--config', o.configFile],
    {
      name: 'edge-agent',
      fdLimit: o.fdLimit ?? 65_536,
      ipc: o.ipc ?? false,
      env: { ...process.env, ...o.env },
      ...(o.onStdout === undefined ? {} : { onStdout: o.onStdout }),
    },
  )
  try {
    await waitFor(async () => (await getJson(o.adminPort, '/healthz')).status === 200, {
      what: 'edge-agent /healthz = 200',
      timeoutMs: 60_000,
      intervalMs: 100,
      abort: proc.exited,
    })
  } catch (err) {
    await proc.stop('SIGKILL')
    rmSync(o.dir, { recursive: true, force: true })
    throw new Error(`${(err as Error).message}\n${proc.output()}`)
  }
  return proc
}

export async function startAgent(opts: AgentOptions): Promise<BrokerProcess & { env: Record<string, string> }> {
  if (!existsSync(AGENT_MAIN)) throw new Error(`${AGENT_MAIN} missing: run \`npm run build\` first`)
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-agent-'))
  const conf = join(dir, 'agent.yaml')
  writeFileSync(conf, agentConfig(opts, join(dir, 'data')))
  const env = opts.plainEnv === true ? {} : deployedEnv()
  const proc = await launchAgent({
    configFile: conf,
    adminPort: opts.adminPort,
    dir,
    nodeFlags: opts.nodeFlags ?? [],
    fdLimit: opts.fdLimit ?? 65_536,
    ipc: opts.ipc ?? false,
    env: { ...env, ...opts.env },
  })
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true })
  return {
    name: 'edge-agent',
    pid: proc.pid,
    port: opts.port,
    proc,
    env,
    async clients() {
      const { status, body } = await getJson(opts.adminPort, '/status')
      if (status !== 200) throw new Error(`GET /status: HTTP ${status}`)
      const n = (body as { broker?: { clients?: unknown } }).broker?.clients
      if (typeof n !== 'number') throw new Error('GET /status: no broker.clients')
      return n
    },
    async stop() {
      try {
        const exit = await proc.stop('SIGTERM', 25_000)
        if (exit.code !== 0)
          throw new Error(`edge-agent exited with ${exit.code ?? exit.signal} on SIGTERM\n${proc.output()}`)
      } finally {
        cleanup()
      }
    },
  }
}
