// The `edge in` and `edge out` nodes: flows subscribe and publish on the
// agent's local broker in-process. Node-RED loads this file (compiled to
// dist/node-red/nodes/edge.cjs) from nodesDir; its only link to the agent is
// the API object in RED.settings.edgeAgentApi (../edge-api.ts), which function
// nodes cannot reach. CommonJS because Node-RED require()s node files.

interface EdgeMessage {
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
}
interface EdgeNodesApi {
  publish(nodeId: string, msg: EdgeMessage): Promise<'published' | 'throttled'>
  subscribe(nodeId: string, filter: string, deliver: (msg: EdgeMessage) => void): Promise<() => Promise<void>>
}
interface NodeStatus {
  fill?: 'red' | 'green' | 'yellow' | 'grey'
  shape?: 'dot' | 'ring'
  text?: string
}
interface RedNode {
  id: string
  on(event: 'input', fn: (msg: Record<string, unknown>, send: unknown, done: (err?: Error) => void) => void): void
  on(event: 'close', fn: (removed: boolean, done: () => void) => void): void
  send(msg: Record<string, unknown>): void
  status(s: NodeStatus): void
  error(err: unknown, msg?: unknown): void
}
interface Red {
  settings: Record<string, unknown>
  nodes: {
    createNode(node: unknown, config: unknown): void
    registerType(type: string, ctor: (this: RedNode, config: never) => void): void
  }
}

interface InConfig {
  topic: string
  datatype?: 'auto' | 'utf8' | 'buffer' | 'json'
}
interface OutConfig {
  topic?: string
  qos?: string
  retain?: string
}

function decode(payload: Buffer, datatype: InConfig['datatype']): unknown {
  switch (datatype) {
    case 'buffer':
      return payload
    case 'utf8':
      return payload.toString('utf8')
    case 'json':
      return JSON.parse(payload.toString('utf8'))
    default: {
      // As `mqtt in` does: text when the bytes are valid UTF-8, else a Buffer.
      const text = payload.toString('utf8')
      return Buffer.from(text, 'utf8').equals(payload) ? text : payload
    }
  }
}

function encode(payload: unknown): Buffer {
  if (Buffer.isBuffer(payload)) return payload
  if (typeof payload === 'string') return Buffer.from(payload)
  if (payload === null || payload === undefined) return Buffer.alloc(0)
  if (typeof payload === 'object') return Buffer.from(JSON.stringify(payload))
  return Buffer.from(String(payload))
}

function validTopic(t: unknown): t is string {
  return typeof t === 'string' && t !== '' && !/[+#\u0000]/.test(t)
}

module.exports = function register(RED: Red): void {
  const api = RED.settings['edgeAgentApi'] as EdgeNodesApi | undefined

  function EdgeIn(this: RedNode, config: InConfig): void {
    RED.nodes.createNode(this, config)
    const node = this
    if (api === undefined) {
      node.status({ fill: 'red', shape: 'ring', text: 'needs edge-agent' })
      node.error('edge in works only inside edge-agent')
      return
    }
    let unsubscribe: (() => Promise<void>) | undefined
    let closed = false
    node.status({ fill: 'yellow', shape: 'ring', text: 'subscribing' })
    api
      .subscribe(node.id, config.topic, (m) => {
        let payload: unknown
        try {
          payload = decode(m.payload, config.datatype)
        } catch (err) {
          node.error(err, { topic: m.topic })
          return
        }
        node.send({ topic: m.topic, payload, qos: m.qos, retain: m.retain })
      })
      .then(
        (u) => {
          unsubscribe = u
          if (closed) void u()
          else node.status({ fill: 'green', shape: 'dot', text: config.topic })
        },
        (err: unknown) => {
          node.status({ fill: 'red', shape: 'ring', text: 'not subscribed' })
          node.error(err)
        },
      )
    node.on('close', (_removed, done) => {
      closed = true
      const u = unsubscribe
      if (u === undefined) return done()
      u().then(done, done)
    })
  }

  function EdgeOut(this: RedNode, config: OutConfig): void {
    RED.nodes.createNode(this, config)
    const node = this
    let throttled = 0
    let shown = 0
    node.on('input', (msg, _send, done) => {
      if (api === undefined) return done(new Error('edge out works only inside edge-agent'))
      const topic = config.topic !== undefined && config.topic !== '' ? config.topic : msg['topic']
      if (!validTopic(topic))
        return done(new Error('edge out: no valid topic (set one in the node, or msg.topic without + or #)'))
      const q = config.qos !== undefined && config.qos !== '' ? Number(config.qos) : Number(msg['qos'] ?? 1)
      const qos = (q === 0 || q === 1 || q === 2 ? q : 1) as 0 | 1 | 2
      const retain = config.retain === 'true' || (config.retain !== 'false' && msg['retain'] === true)
      api.publish(node.id, { topic, payload: encode(msg['payload']), qos, retain }).then(
        (outcome) => {
          if (outcome === 'throttled') {
            throttled++
            const now = Date.now()
            if (now - shown > 1000) {
              shown = now
              node.status({ fill: 'yellow', shape: 'ring', text: `throttled ${throttled}` })
            }
          }
          done()
        },
        (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
      )
    })
  }

  RED.nodes.registerType('edge in', EdgeIn as (this: RedNode, config: never) => void)
  RED.nodes.registerType('edge out', EdgeOut as (this: RedNode, config: never) => void)
}
