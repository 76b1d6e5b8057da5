// Flows used by the Node-RED tests, built in code because they name ports.
export const NORMALISE = `const id = msg.topic.split('/')[1]
msg.topic = 'site/' + id + '/temperature'
msg.payload = { celsius: Number(msg.payload) / 10 }
return msg`

/** devices/+/raw → { celsius } on site/<id>/temperature, through the edge nodes. */
export function edgeFlow(): Record<string, unknown>[] {
  return [
    { id: 'tab-edge', type: 'tab', label: 'normalise (edge nodes)' },
    { id: 'edge-in-1', type: 'edge in', z: 'tab-edge', topic: 'devices/+/raw', datatype: 'utf8', wires: [['fn-1']] },
    { id: 'fn-1', type: 'function', z: 'tab-edge', func: NORMALISE, outputs: 1, wires: [['edge-out-1']] },
    { id: 'edge-out-1', type: 'edge out', z: 'tab-edge', topic: '', qos: '1', retain: 'false', wires: [] },
  ]
}

/** The same with the standard mqtt nodes against the agent's own listener. */
export function mqttFlow(port: number): Record<string, unknown>[] {
  return [
    { id: 'tab-mqtt', type: 'tab', label: 'normalise (mqtt nodes)' },
    {
      id: 'broker-1',
      type: 'mqtt-broker',
      name: 'local',
      broker: '127.0.0.1',
      port: String(port),
      clientid: 'node-red-std',
      autoConnect: true,
      usetls: false,
      protocolVersion: '4',
      keepalive: '60',
      cleansession: true,
    },
    {
      id: 'mqtt-in-1',
      type: 'mqtt in',
      z: 'tab-mqtt',
      topic: 'devices/+/raw',
      qos: '1',
      datatype: 'utf8',
      broker: 'broker-1',
      nl: false,
      rap: true,
      rh: 0,
      inputs: 0,
      wires: [['fn-2']],
    },
    { id: 'fn-2', type: 'function', z: 'tab-mqtt', func: NORMALISE, outputs: 1, wires: [['mqtt-out-1']] },
    {
      id: 'mqtt-out-1',
      type: 'mqtt out',
      z: 'tab-mqtt',
      topic: '',
      qos: '1',
      retain: 'false',
      broker: 'broker-1',
      wires: [],
    },
  ]
}

/**
 * Misbehaving flows: a function that throws on every message, and one that
 * floods (a timer sending bursts) into an edge out node; the flood also feeds
 * the thrower. Timers of function nodes are cleared when flows stop.
 */
export function badFlows(burst: number, everyMs: number): Record<string, unknown>[] {
  const flood = `const t = setInterval(() => { for (let i = 0; i < ${burst}; i++) node.send({ topic: 'flood/x', payload: i }) }, ${everyMs})
return null`
  return [
    { id: 'tab-bad', type: 'tab', label: 'misbehaving' },
    {
      id: 'inject-1',
      type: 'inject',
      z: 'tab-bad',
      once: true,
      onceDelay: 0.1,
      repeat: '',
      topic: '',
      payload: '',
      payloadType: 'date',
      props: [{ p: 'payload' }],
      wires: [['flood-1']],
    },
    {
      id: 'flood-1',
      type: 'function',
      z: 'tab-bad',
      func: flood,
      outputs: 1,
      wires: [['edge-out-flood', 'thrower-1']],
    },
    { id: 'edge-out-flood', type: 'edge out', z: 'tab-bad', topic: '', qos: '1', retain: 'false', wires: [] },
    {
      id: 'thrower-1',
      type: 'function',
      z: 'tab-bad',
      func: "throw new Error('boom ' + msg.payload)",
      outputs: 1,
      wires: [[]],
    },
    {
      id: 'edge-in-throw',
      type: 'edge in',
      z: 'tab-bad',
      topic: 'devices/+/raw',
      datatype: 'utf8',
      wires: [['thrower-2']],
    },
    { id: 'thrower-2', type: 'function', z: 'tab-bad', func: "throw new Error('raw boom')", outputs: 1, wires: [[]] },
  ]
}
