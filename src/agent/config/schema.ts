// The site config: one schema for the whole agent. It is the source of the
// TypeScript type, of the defaults, of `config init`'s reference and of the
// JSON Schema shipped for editors (schema/edge-agent.schema.json), so these
// cannot drift apart. Key names are a public contract: add, never rename.
import { Type, type Static } from 'typebox'

const Port = (description: string, defaultPort?: number) =>
  Type.Integer({
    minimum: 0,
    maximum: 65535,
    description,
    ...(defaultPort === undefined ? {} : { default: defaultPort }),
  })

export const ListenerSchema = Type.Object(
  {
    protocol: Type.Enum(['mqtt', 'ws'], {
      description: 'mqtt = MQTT over TCP; ws = MQTT over WebSocket',
    }),
    host: Type.String({ minLength: 1, default: '0.0.0.0', description: 'address to bind' }),
    port: Port('TCP port; 0 picks a free port (tests)'),
    path: Type.String({
      pattern: '^/',
      default: '/mqtt',
      description: 'HTTP path of the WebSocket endpoint (ws only)',
    }),
  },
  { additionalProperties: false },
)

export const BrokerLimitsSchema = Type.Object(
  {
    maxConnections: Type.Integer({
      minimum: 1,
      default: 10000,
      description: 'connected clients at most; more get CONNACK 3 (server unavailable)',
    }),
    maxPayloadBytes: Type.Integer({
      minimum: 1,
      maximum: 268435455,
      default: 262144,
      description: 'largest PUBLISH payload accepted after CONNECT; larger closes the connection',
    }),
    preConnectMaxBytes: Type.Integer({
      minimum: 128,
      maximum: 1048576,
      default: 65536,
      description: 'largest packet accepted before the client is authenticated (room for a Will)',
    }),
    keepaliveMinSec: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 0,
      description: 'clients asking for a shorter keepalive (0 = none) are refused; 0 allows any',
    }),
    keepaliveMaxSec: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 1200,
      description: 'clients asking for a longer keepalive, or none, are refused; 0 allows any',
    }),
    maxInflightPerClient: Type.Integer({
      minimum: 1,
      maximum: 65535,
      default: 100,
      description: 'inbound QoS 2 messages awaiting PUBREL per client; more disconnects the client',
    }),
    connectTimeoutMs: Type.Integer({
      minimum: 100,
      default: 10000,
      description: 'time a new connection has to send CONNECT',
    }),
    maxClientIdBytes: Type.Integer({
      minimum: 23,
      maximum: 65535,
      default: 256,
      description: 'longest client identifier accepted (MQTT 3.1 clients are held to 23)',
    }),
    maxTopicLevels: Type.Integer({
      minimum: 1,
      maximum: 100,
      default: 32,
      description: 'deepest topic or filter accepted (levels separated by /)',
    }),
    drainTimeoutMs: Type.Integer({
      minimum: 0,
      default: 30000,
      description: 'a subscriber that does not read for this long is disconnected; 0 = never',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const BrokerSchema = Type.Object(
  {
    listeners: Type.Array(ListenerSchema, {
      minItems: 1,
      default: [{ protocol: 'mqtt', host: '0.0.0.0', port: 1883 }],
      description: 'where devices connect',
    }),
    limits: BrokerLimitsSchema,
  },
  { additionalProperties: false, default: {} },
)

export const BridgeRuleSchema = Type.Object(
  {
    topic: Type.String({ minLength: 1, description: 'MQTT topic filter, relative to the prefixes' }),
    direction: Type.Enum(['out', 'in', 'both'], {
      description: 'out = local to upstream, in = upstream to local',
    }),
    qos: Type.Integer({ minimum: 0, maximum: 2, default: 1 }),
    localPrefix: Type.String({ default: '', description: 'prefix on the local side' }),
    remotePrefix: Type.String({ default: '', description: 'prefix on the upstream side' }),
  },
  { additionalProperties: false },
)

export const UpstreamSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', maxLength: 64 }),
    url: Type.String({
      pattern: '^(mqtt|mqtts|ws|wss)://',
      description: 'upstream broker, e.g. mqtt://10.0.3.10:1883',
    }),
    rules: Type.Array(BridgeRuleSchema, { default: [] }),
  },
  { additionalProperties: false },
)

export const AgentConfigSchema = Type.Object(
  {
    site: Type.Object(
      {
        name: Type.String({
          pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$',
          maxLength: 64,
          default: 'edge-agent',
          description: 'name of this site segment, used in logs and upstream status',
        }),
        level: Type.Integer({
          minimum: 0,
          maximum: 5,
          default: 2,
          description: 'Purdue (ISA-95) level of this segment',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    dataDir: Type.String({
      minLength: 1,
      description: 'state directory (database, certificates); default $STATE_DIRECTORY, else ./data',
    }),
    log: Type.Object(
      {
        level: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
          default: 'info',
        }),
        format: Type.Enum(['auto', 'json', 'pretty'], {
          default: 'auto',
          description: 'auto = readable on a terminal, JSON otherwise (journald)',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    admin: Type.Object(
      {
        enabled: Type.Boolean({ default: true }),
        host: Type.String({ default: '127.0.0.1', description: 'loopback address only' }),
        port: Port('HTTP port of /healthz /status /metrics', 9180),
      },
      { additionalProperties: false, default: {} },
    ),
    broker: BrokerSchema,
    upstreams: Type.Array(UpstreamSchema, { default: [] }),
  },
  { additionalProperties: false },
)

export type AgentConfig = Static<typeof AgentConfigSchema>
export type ListenerConfig = Static<typeof ListenerSchema>
export type BrokerConfig = Static<typeof BrokerSchema>
export type BrokerLimits = Static<typeof BrokerLimitsSchema>
export type UpstreamConfig = Static<typeof UpstreamSchema>
export type BridgeRuleConfig = Static<typeof BridgeRuleSchema>
