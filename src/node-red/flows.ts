// What `nodered deploy` accepts: Node-RED's flow file format, a JSON array of
// node objects. Checked before anything reaches the running agent, so that a
// wrong file (a config, a single flow object, a credentials file) is refused
// with the reason instead of replacing every flow on the site. Pure.
import { NodeRedError } from './errors.js'

export interface FlowNode {
  readonly id: string
  readonly type: string
  readonly [key: string]: unknown
}

/** Parses and checks a flow file's text; throws EDGE_ERR_NODERED_FLOWS_INVALID naming the first problem. */
export function parseFlows(text: string, source = 'flows'): FlowNode[] {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw invalid(`${source}: not JSON (${err instanceof Error ? err.message : String(err)})`)
  }
  return checkFlows(doc, source)
}

export function checkFlows(doc: unknown, source = 'flows'): FlowNode[] {
  if (!Array.isArray(doc)) {
    const what = doc === null ? 'null' : typeof doc === 'object' ? 'an object' : typeof doc
    throw invalid(`${source}: expected a JSON array of nodes (Node-RED's flow file format), got ${what}`)
  }
  const ids = new Set<string>()
  doc.forEach((n: unknown, i) => {
    if (n === null || typeof n !== 'object' || Array.isArray(n))
      throw invalid(`${source}[${i}]: expected a node object`)
    const node = n as Record<string, unknown>
    if (typeof node['id'] !== 'string' || node['id'] === '')
      throw invalid(`${source}[${i}]: "id" must be a non-empty string`)
    if (typeof node['type'] !== 'string' || node['type'] === '')
      throw invalid(`${source}[${i}] (id ${node['id']}): "type" must be a non-empty string`)
    if (ids.has(node['id'])) throw invalid(`${source}[${i}]: id ${node['id']} appears twice`)
    ids.add(node['id'])
  })
  return doc as FlowNode[]
}

function invalid(message: string): NodeRedError {
  return new NodeRedError('EDGE_ERR_NODERED_FLOWS_INVALID', message)
}
