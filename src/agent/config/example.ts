// The commented example that `edge-agent config init` writes. A test checks
// that it validates and mentions every key of the schema, so it cannot drift.
export const EXAMPLE_CONFIG = `# edge-agent site config
# Every key is optional: anything left out takes the default shown here.
# Check it with:   edge-agent config validate --config <this file>
# Editor support:  edge-agent config schema > edge-agent.schema.json, then
#                  # yaml-language-server: $schema=./edge-agent.schema.json
# Any key can also be set by environment (EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS=500)
# or flag (--set broker.limits.maxConnections=500); flags win over env, env over this file.

site:
  name: edge-agent        # this segment's name, in logs and in the status sent upstream
  level: 2                # Purdue (ISA-95) level of this segment, 0-5

# State directory: message store, certificates. Relative paths are relative to
# this file. Default: $STATE_DIRECTORY (systemd), else ./data
# dataDir: /var/lib/edge-agent

log:
  level: info             # fatal | error | warn | info | debug | trace | silent
  format: auto            # auto (readable on a terminal, JSON otherwise) | json | pretty

admin:                    # /healthz /status /metrics (Prometheus); no authentication,
  enabled: true           # so it only ever binds to loopback
  host: 127.0.0.1
  port: 9180

broker:
  listeners:              # where devices connect (MQTT 3.1 and 3.1.1)
    - { protocol: mqtt, host: 0.0.0.0, port: 1883 }
    # - { protocol: ws, host: 0.0.0.0, port: 8080, path: /mqtt }   # MQTT over WebSocket
  limits:
    maxConnections: 10000     # more get CONNACK 3 (server unavailable)
    maxPayloadBytes: 262144   # larger PUBLISH payloads close the connection
    preConnectMaxBytes: 65536 # largest packet before the client is authenticated
    keepaliveMinSec: 0        # refuse keepalives shorter than this (0: no minimum)
    keepaliveMaxSec: 1200     # refuse longer keepalives, or none at all (0: no maximum)
    maxInflightPerClient: 100 # QoS 2 messages a client may leave unreleased
    connectTimeoutMs: 10000   # time a new connection has to send CONNECT
    maxClientIdBytes: 256     # longest client id (MQTT 3.1 clients: 23)
    maxTopicLevels: 32        # deepest topic or filter
    drainTimeoutMs: 30000     # a subscriber that stops reading is dropped after this (0: never)

# Upstream brokers (the next Purdue level up), with Mosquitto-style bridge rules.
upstreams: []
#  - name: site-broker
#    url: mqtt://10.0.3.10:1883
#    rules:
#      - { topic: "devices/+/telemetry", direction: out, qos: 1, localPrefix: "", remotePrefix: "plant-a/cell-2/" }
#      - { topic: "devices/+/cmd", direction: in, qos: 1, localPrefix: "", remotePrefix: "plant-a/cell-2/" }
`
