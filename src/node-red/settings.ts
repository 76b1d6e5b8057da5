// Node-RED's settings object, secure by default (docs/node-red.md "Security"):
// admin authentication always on, no palette or npm installs at run time, no
// projects, no telemetry or diagnostics endpoint, nothing of the agent in the
// function nodes' global context, logs into the agent's pino logger.
import type { Logger } from 'pino'
import type { EdgeNodesApi } from './edge-api.js'
import type { NodeRedUser } from './state.js'

export interface NodeRedSettingsInput {
  readonly userDir: string
  readonly nodesDir: string
  readonly credentialSecret: string
  readonly httpNodeRoot: string
  readonly editor: boolean
  readonly logLevel: string
  readonly logger: Logger
  readonly edgeApi: EdgeNodesApi
  /** Reads the users file at each login, so that `nodered passwd` needs no restart. */
  readonly users: () => Promise<NodeRedUser[]>
  readonly verifyPassword: (password: string, hash: string) => Promise<boolean>
  readonly cliToken: string
}

/** The key the edge nodes read their API from (RED.settings[EDGE_API_KEY]). */
export const EDGE_API_KEY = 'edgeAgentApi'

const LEVELS: Record<number, 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'> = {
  10: 'fatal',
  20: 'error',
  30: 'warn',
  40: 'info',
  50: 'debug',
  60: 'trace',
}

interface NodeRedLogMessage {
  level: number
  msg?: unknown
  type?: string
  id?: string
  name?: string
  z?: string
}

export function buildSettings(i: NodeRedSettingsInput, hasUsers: boolean): Record<string, unknown> {
  const log = i.logger
  const limiter = new NodeLogLimiter(log)
  const user = (u: NodeRedUser) => ({ username: u.username, permissions: u.permissions })
  return {
    userDir: i.userDir,
    flowFile: 'flows.json',
    flowFilePretty: true,
    credentialSecret: i.credentialSecret,
    nodesDir: [i.nodesDir],
    httpAdminRoot: '/',
    httpNodeRoot: i.httpNodeRoot === '' ? false : i.httpNodeRoot,
    // No user, no editor: the admin API stays for the CLI's token.
    disableEditor: !(i.editor && hasUsers),
    adminAuth: {
      type: 'credentials',
      users: async (username: string) => {
        const u = (await i.users()).find((x) => x.username === username)
        return u === undefined ? null : user(u)
      },
      authenticate: async (username: string, password: string) => {
        const u = (await i.users()).find((x) => x.username === username)
        if (u === undefined || typeof password !== 'string') return null
        return (await i.verifyPassword(password, u.password)) ? user(u) : null
      },
      tokens: async (token: string) => (token === i.cliToken ? { username: 'edge-agent-cli', permissions: '*' } : null),
      tokenHeader: 'authorization',
    },
    // Function nodes see an empty global context and cannot load modules.
    functionGlobalContext: {},
    functionExternalModules: false,
    exportGlobalContextKeys: false,
    externalModules: {
      autoInstall: false,
      palette: { allowInstall: false, allowUpload: false },
      modules: { allowInstall: false },
    },
    editorTheme: {
      projects: { enabled: false },
      tours: false,
    },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    logging: {
      edgeAgent: {
        level: i.logLevel,
        metrics: false,
        audit: false,
        handler: () => (m: NodeRedLogMessage) => {
          const level = LEVELS[m.level]
          if (level === undefined) return
          if (m.id !== undefined && !limiter.allow(m.id)) return
          const { text, err } = describe(m.msg)
          if (m.id !== undefined) {
            log[level](
              { nodeId: m.id, nodeType: m.type, nodeName: m.name || undefined, flowId: m.z, text, err },
              'node message',
            )
          } else {
            log[level]({ text, err }, 'node-red runtime')
          }
        },
      },
    },
    [EDGE_API_KEY]: i.edgeApi,
  }
}

/**
 * A node that fails on every message must not flood the journal (nor the
 * event loop with log writes): per node, NODE_LOG_BURST lines per window, then
 * one line with the count of those left out.
 */
export const NODE_LOG_BURST = 10
const NODE_LOG_WINDOW_MS = 10_000

class NodeLogLimiter {
  readonly #log: Logger
  readonly #now: () => number
  readonly #windows = new Map<string, { start: number; count: number }>()

  constructor(log: Logger, now: () => number = Date.now) {
    this.#log = log
    this.#now = now
  }

  allow(nodeId: string): boolean {
    const t = this.#now()
    let w = this.#windows.get(nodeId)
    if (w === undefined || t - w.start >= NODE_LOG_WINDOW_MS) {
      if (w !== undefined && w.count > NODE_LOG_BURST) {
        this.#log.warn(
          { nodeId, suppressed: w.count - NODE_LOG_BURST, windowMs: NODE_LOG_WINDOW_MS },
          'node messages suppressed',
        )
      }
      if (this.#windows.size > 10_000) this.#windows.clear()
      w = { start: t, count: 0 }
      this.#windows.set(nodeId, w)
    }
    w.count++
    return w.count <= NODE_LOG_BURST
  }
}

/** Node-RED logs strings, objects and errors, some from a function node's vm realm (not `instanceof Error`). */
function describe(msg: unknown): { text: string | undefined; err: { message: string; stack?: string } | undefined } {
  if (typeof msg === 'string') return { text: msg, err: undefined }
  if (msg !== null && typeof msg === 'object' && typeof (msg as { message?: unknown }).message === 'string') {
    const e = msg as { message: string; stack?: unknown }
    return { text: e.message, err: { message: e.message, ...(typeof e.stack === 'string' ? { stack: e.stack } : {}) } }
  }
  let text: string | undefined
  try {
    text = JSON.stringify(msg)
  } catch {
    text = String(msg)
  }
  return { text, err: undefined }
}
