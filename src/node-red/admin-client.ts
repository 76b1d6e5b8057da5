// The CLI's side of `nodered deploy` / `nodered export`: Node-RED's own admin
// API on the running agent, authenticated with the bearer token the agent
// writes to <dataDir>/node-red/cli.json (0600) at each start. Whoever can read
// the state directory (the agent's user, root) can deploy; nobody else can.
import { readFile } from 'node:fs/promises'
import type { CliEndpoint } from './node-red.js'
import { NodeRedError } from './errors.js'
import { checkFlows, type FlowNode } from './flows.js'
import { NodeRedState } from './state.js'

export async function readCliEndpoint(dataDir: string): Promise<CliEndpoint> {
  const file = new NodeRedState(dataDir).endpointFile
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT')
      throw new NodeRedError(
        'EDGE_ERR_NODERED_UNREACHABLE',
        `${file} not found: is the agent running with nodeRed.enabled? (systemctl status edge-agent)`,
      )
    throw new NodeRedError(
      'EDGE_ERR_NODERED_STATE',
      `${file}: ${(err as Error).message} (run as the agent's user or root)`,
      { cause: err },
    )
  }
  const doc = JSON.parse(text) as Partial<CliEndpoint>
  if (typeof doc.url !== 'string' || typeof doc.token !== 'string')
    throw new NodeRedError('EDGE_ERR_NODERED_STATE', `${file}: expected {url, token}`)
  return { url: doc.url, token: doc.token }
}

async function call(ep: CliEndpoint, method: string, path: string, body?: string): Promise<Response> {
  try {
    return await fetch(new URL(path, ep.url), {
      method,
      headers: {
        authorization: `Bearer ${ep.token}`,
        'Node-RED-API-Version': 'v1',
        ...(body === undefined ? {} : { 'content-type': 'application/json', 'Node-RED-Deployment-Type': 'full' }),
      },
      ...(body === undefined ? {} : { body }),
      signal: AbortSignal.timeout(30_000),
    })
  } catch (err) {
    const why = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)
    throw new NodeRedError(
      'EDGE_ERR_NODERED_UNREACHABLE',
      `no Node-RED answering at ${ep.url} (${why}): is the agent running?`,
      { cause: err },
    )
  }
}

/** Replaces every flow of the running Node-RED (a full deploy); resolves when it has started them. */
export async function deployFlows(ep: CliEndpoint, flows: readonly FlowNode[]): Promise<void> {
  const res = await call(ep, 'POST', '/flows', JSON.stringify(flows))
  if (res.status === 204 || res.ok) return
  const text = (await res.text()).slice(0, 500)
  throw new NodeRedError('EDGE_ERR_NODERED_DEPLOY_FAILED', `Node-RED refused the flows: HTTP ${res.status} ${text}`)
}

export async function exportFlows(ep: CliEndpoint): Promise<FlowNode[]> {
  const res = await call(ep, 'GET', '/flows')
  if (!res.ok)
    throw new NodeRedError('EDGE_ERR_NODERED_UNREACHABLE', `Node-RED answered HTTP ${res.status} to GET /flows`)
  return checkFlows(await res.json(), 'exported flows')
}
