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
  listeners:              # where devices connect (MQTT 3.1, 3.1.1 and 5)
    # allowAnonymous: clients without a user name (or certificate identity) may connect;
    # false = only users of the password file (edge-agent users add) and identified devices
    # mqttVersions: versions a listener accepts, default ['3.1', '3.1.1', '5']; others are refused
    #   (CONNACK 1, MQTT 5: 0x84), e.g. mqttVersions: ['3.1.1'] keeps MQTT 5 devices off a listener
    - { protocol: mqtt, host: 0.0.0.0, port: 1883, allowAnonymous: true }
    # - { protocol: ws, host: 0.0.0.0, port: 8080, path: /mqtt, allowAnonymous: false }   # MQTT over WebSocket
    # MQTT over TLS with device certificates from the local CA (see certs: and devices:):
    # - protocol: mqtts
    #   host: 0.0.0.0
    #   port: 8883
    #   requireClientCert: true   # refuse clients without a certificate from the local CA
    #   certFile: /etc/edge-agent/server.crt   # optional: own server certificate + chain (PEM) ...
    #   keyFile: /etc/edge-agent/server.key    # ... and key; default: issued by the local CA, rotated
    #   caFile: /etc/edge-agent/devices-ca.pem # optional: CAs device certificates must chain to; default the local CA
    #   allowAnonymous: false
    #   useIdentityAsUsername: false  # true: the certificate names the device, the client id is free
    #   serverCertificate: local-ca           # local-ca | acme (the gateway certificate of certs.acme, swapped when renewed)
  limits:
    maxConnections: 10000     # more get CONNACK 3 (server unavailable)
    maxPayloadBytes: 262144   # larger PUBLISH payloads close the connection
    preConnectMaxBytes: 65536 # largest packet before the client is authenticated
    keepaliveMinSec: 0        # refuse keepalives shorter than this (0: no minimum)
    keepaliveMaxSec: 1200     # refuse longer keepalives (0: no maximum)
    allowKeepaliveZero: true  # accept keepalive 0 (no keepalive); false refuses it with CONNACK 2
    maxRetainedMessages: 100000   # retained topics kept; beyond, delivered but not kept (counted)
    maxRetainedBytes: 67108864    # their payload bytes (64 MiB)
    maxInflightPerClient: 100 # QoS 2 messages a client may leave unreleased
    connectTimeoutMs: 10000   # time a new connection has to send CONNECT
    maxClientIdBytes: 256     # longest client id, MQTT 3.1 clients too
    maxTopicLevels: 32        # deepest topic or filter
    drainTimeoutMs: 30000     # a subscriber that stops reading is dropped after this (0: never)
  auth:                       # user name / password logins (edge-agent users add|passwd|remove|list)
    # passwordFile: /etc/mosquitto/passwd  # Mosquitto's format ($7$, $6$); default <dataDir>/passwd;
    #                                      # re-read on change; absent = user names are not checked
    maxFailedLogins: 5        # per client address within the window; more get CONNACK 5 unchecked
    failedLoginWindowSec: 60
  acl:                        # one ACL for every client and listener; off until a rule or file is given,
                              # then deny by default (devices keep their devices.* space on top)
    # file: /etc/mosquitto/acl   # import a Mosquitto acl_file (topic/user/pattern, read|write|readwrite|deny)
    # anonymous: { publish: [], subscribe: [], read: ["status/#"], deny: [] }   # clients without a user name
    users: []
    #  - { name: plc-gw-1, publish: ["plant/line1/#"], subscribe: ["plant/line1/cmd/#"] }
    groups: []
    #  - { name: hmis, members: ["hmi-*"], read: ["plant/#"], publish: ["plant/+/cmd/%u"] }
    patterns: []
    #  - { publish: ["clients/%c/#"], subscribe: ["clients/%c/#"] }   # %u user name, %c client id
    onDeniedPublish: drop     # drop (acknowledge, count, log) | disconnect; a SUBSCRIBE gets 0x80

# Store-and-forward: every message an 'out' rule sends upward is committed to
# SQLite (<dataDir>/edge-agent.db) before the device gets its PUBACK, and kept
# until the upstream acknowledges it. Retained messages and persistent
# sessions of the local broker live in the same file.
buffer:
  durability: full          # full: nothing acknowledged is lost on power failure (WAL + fsync per group commit)
                            # normal: a power cut may lose the last commits (a crash loses nothing)
                            # off: a power cut may lose the file (it is then moved aside and a fresh one made)
  maxBytes: 0               # bytes of queued messages at most; 0 = 25 % of the disk, 64 MiB..1 GiB
  minFreeBytes: 0           # free disk space never used; 0 = min(200 MiB, 5 % of the disk)
  maxBatch: 256             # messages per group commit at most
  batchWindowMs: 0          # extra wait to gather a commit; 0 = commit at the end of each event-loop turn
  maxFsyncsPerSecond: 100   # durability full: fsyncs per second at most (commits share one); 0 = no bound

# Device certificates: a local issuing CA in <dataDir>/certs that keeps every
# device's certificate current, online or not (docs/certificates.md).
# Create it with 'edge-agent certs init', or import an intermediate from the
# site PKI with 'edge-agent certs init --csr' + 'edge-agent certs import-ca'.
certs:
  autoInit: false           # create a self-signed CA at first start if there is none
  caName: ""                # CN of a CA made by autoInit / init; default "edge-agent local CA (<site.name>)"
  caLifetimeSec: 157680000  # 5 years (CA made by autoInit / init)
  backdateSec: 3600         # notBefore is set 1 h back, for devices whose clock lags
  allowShortLifetimes: false  # lifetimes under 1 h only with this (tests, demos)
  device:
    lifetimeSec: 604800     # 7 days; renewal keeps devices current
    renewAfter: 0.667       # a device may renew once 2/3 of its lifetime has passed
    maxLifetimeSec: 31536000  # ceiling for 'certs issue --lifetime' (factory provisioning)
  server:                   # the broker's own certificate on mqtts listeners, rotated in place
    lifetimeSec: 604800
    renewAfter: 0.667       # rotated at 2/3 of its lifetime (minus jitter up to 1/20)
    hostnames: []           # extra DNS names / IPs; this host's name, localhost, 127.0.0.1, ::1 always
  renewal:                  # renewal over MQTT (works with the upstream down)
    enabled: true
    topicPrefix: "devices/{id}/$certs"  # device publishes <prefix>/csr, gets <prefix>/cert
    minRequestIntervalSec: 10           # per-device rate limit on requests
  # The gateway's own certificate from the site's ACME CA (step-ca, Vault, EJBCA, ...),
  # for upstreams with clientCertificate: acme (docs/certificates.md, "ACME"):
  # acme:
  #   directoryUrl: https://ca.plant.example:9000/acme/acme/directory
  #   email: ""                  # account contact (optional)
  #   identifiers: [gw-cell2.plant.example]   # DNS names in the certificate
  #   challenge: http-01         # http-01 | tls-alpn-01 (served by the agent while an order is pending) | dns-01 (hook)
  #   http01: { host: 0.0.0.0, port: 80 }
  #   tlsAlpn01: { host: 0.0.0.0, port: 443 }
  #   dns01:
  #     command: ""              # /usr/local/bin/dns-hook present|cleanup <name> <value>
  #     timeoutSec: 300
  #   renewAt: 0.667             # fraction of the lifetime (minus jitter); earlier if the CA publishes ARI
  #   maxIntervalSec: 0          # renew at least this often; 0 = by renewAt only
  #   rotateKey: true            # new key at every renewal
  #   caFile: ""                 # extra trust for the ACME server's HTTPS (PEM)
  #   trustFile: ""              # CAs the issued chain must lead to (PEM); checked before promotion
  #   eab: { kid: "", hmacKeyFile: "" }   # external account binding, if the CA requires it
  #   retryMinMs: 60000          # after a failure: retry after this, doubling with jitter ...
  #   retryMaxMs: 3600000        # ... up to this
  #   requestTimeoutMs: 30000
  #   warnBeforeSec: 604800      # warn this long before expiry
  #   testUpstreams: true        # test handshake to each upstream using it before promotion
  crl:
    topic: "$edge/ca/crl"   # CRL (PEM), retained; any device may subscribe
    validitySec: 86400      # nextUpdate; re-signed at half
  clock:                    # gateways without an RTC boot with a wrong date
    toleranceSec: 300       # steps this small are normal
    maxForwardJumpSec: 604800  # a bigger forward step pauses issuance until the clock returns
                               # or 'edge-agent certs trust-clock'

# Device isolation on mqtts listeners: the client id must be the certificate's
# identity, and a device publishes and subscribes only inside its own space.
devices:
  identity: cn-or-san       # client id = certificate CN (cn), or CN or a DNS/URI SAN (cn-or-san)
  maxIdBytes: 128
  publish: ["devices/{id}/#"]     # templates; {id} = the device id
  subscribe: ["devices/{id}/#"]   # #, +/+/#, $SYS/#, other devices' spaces: SUBACK 0x80
  onDeniedPublish: disconnect     # disconnect | drop (acknowledge and discard); logged with the device id
  groups: []
  #  - name: presses
  #    members: ["press-*"]          # device ids; * matches any run of characters
  #    publish: ["plant/presses/{id}/#"]
  #    subscribe: ["plant/presses/cmd/#"]

# Node-RED in the agent's process (needs the edge-agent-node-red package;
# docs/node-red.md). Disabled, the module is never loaded. Admin users:
# edge-agent nodered passwd USER; flows: edge-agent nodered deploy flows.json
nodeRed:
  enabled: false
  host: 127.0.0.1           # editor and admin API; loopback unless you mean otherwise
  port: 1880
  httpNodeRoot: ""          # path of the flows' http in endpoints, e.g. /api; empty = off
  identity: node-red        # identity of edge out publishes in the device ACL (devices.groups may name it)
  maxPublishRatePerSec: 1000  # per edge out node; more are dropped and counted
  maxPayloadBytes: 262144   # larger edge out payloads are refused
  editor: true              # serve the editor (once a user exists)
  logLevel: info            # Node-RED's own lines, with component: node-red

# Upstream brokers (the next Purdue level up), with Mosquitto-style bridge rules:
# local topic = localPrefix + topic, remote topic = remotePrefix + topic.
# The agent only ever connects out; commands come down the same connection.
upstreams: []
#  - name: site-broker
#    url: mqtt://10.0.3.10:1883     # mqtt | mqtts | ws | wss
#    protocolVersion: 5             # 5 = MQTT 5; 4 = MQTT 3.1.1 (use 4 toward another edge-agent)
#    clientId: ""                   # default edge-agent.<site.name>.<name>; keep it stable
#    username: ""
#    passwordFile: ""               # file holding the password, read at every connect
#    caFile: ""                     # PEM CAs to trust (mqtts/wss); default system roots
#    certFile: ""                   # client certificate for mutual TLS ...
#    keyFile: ""                    # ... and its key
#    tlsServerName: ""              # name expected in the server certificate; default the URL host
#    keepaliveSec: 30               # a dead link is noticed after 1.5 x this
#    cleanStart: false              # false: resume the session, downward subscriptions survive
#    sessionExpirySec: 604800       # MQTT 5: the upstream keeps our session (and commands) this long
#    connectTimeoutMs: 10000        # TCP + TLS + CONNACK
#    reconnect:
#      minMs: 1000                  # decorrelated jitter between minMs ...
#      maxMs: 60000                 # ... and maxMs
#      resetAfterMs: 30000          # a connection up this long resets the backoff
#      probeIntervalMs: 500         # while unreachable, TCP-probe this often and reconnect at once (0: off)
#    inflight: 100                  # unacknowledged QoS 1/2 messages at most (upstream Receive Maximum may lower it)
#    maxRatePerSec: 0               # cap on messages/s sent upstream, backlog drain included (0: none)
#    bridgeFlag: true               # MQTT 3.1.1: bridge bit in CONNECT (Mosquitto try_private, no echo)
#    loopDetection: true            # read the upstream agent's identity; never forward in a loop
#    status:
#      enabled: true                # retained birth "online" on connect, last will "offline"
#      topic: "edge-agent/{site}/status"
#    lossReport:                    # JSON report of buffered data dropped for this upstream, in order with the data (docs/buffer.md)
#      enabled: true                # false: this upstream's consumers want none
#      topic: "edge-agent/{site}/drops"  # placeholders {site} and {upstream}
#    renewCertificate:              # toward another edge-agent whose local CA issued certFile (docs/certificates.md)
#      enabled: false               # renew certFile/keyFile over this upstream's own session before they expire
#      atFraction: 0.66             # at this fraction of the lifetime (+ jitter up to 1/20); >= the upstream's certs.device.renewAfter
#      topicPrefix: "devices/{id}/$certs"  # the upstream's certs.renewal.topicPrefix; {id} = the certificate CN
#      rotateKey: true              # new key pair at each renewal
#      timeoutMs: 30000             # wait for the upstream's reply
#      retryMinMs: 10000            # after a failure: retry after this, doubling ...
#      retryMaxMs: 600000           # ... up to this (or when the upstream says, e.g. too early)
#    clientCertificate: files       # files (certFile/keyFile) | acme (the gateway certificate of certs.acme; mqtts/wss)
#    rules:
#      - topic: "devices/+/telemetry"
#        direction: out             # out (up) | in (down) | both
#        qos: 1                     # forwarded with min(message QoS, this)
#        localPrefix: ""            # empty or ending in '/'
#        remotePrefix: "plant-a/cell-2/"
#        name: telemetry            # optional id in logs and drop counters
#        priority: 0                # higher leaves the buffer first; per-topic order is always kept
#        whenFull: auto             # auto (refuse QoS 1/2, drop-oldest QoS 0) | refuse | drop-oldest | drop-lowest-priority
#        conflate: none             # none | latest-only (keep only the newest unsent message per topic)
#        ttlSec: 604800             # max age in the buffer, sent as MQTT 5 Message Expiry (0: forever)
#        maxRatePerTopic: 0         # messages/s per topic forwarded at most, more dropped and counted (0: none)
#        retainAsPublished: true    # keep the retain flag (false: clear it)
#        retainHandling: 0          # MQTT 5, in/both rules: 0 send retained, 1 only when new, 2 never
#        bufferQos0: false          # store QoS 0 while the upstream is down (default: drop, counted)
#      - { topic: "devices/+/cmd", direction: in, qos: 1, localPrefix: "", remotePrefix: "plant-a/cell-2/" }
`
