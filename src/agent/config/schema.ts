// The site config: one schema for the whole agent. It is the source of the
// TypeScript type, of the defaults, of `config init`'s reference and of the
// JSON Schema shipped for editors (schema/edge-agent.schema.json), so these
// cannot drift apart. Key names are a public contract: add, never rename.
// One file on purpose: it reads top to bottom as the config reference, in the
// order `config init` prints it; split, the sections would lose that order.
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
    protocol: Type.Enum(['mqtt', 'ws', 'mqtts'], {
      description: 'mqtt = MQTT over TCP; ws = MQTT over WebSocket; mqtts = MQTT over TLS with device certificates',
    }),
    host: Type.String({ minLength: 1, default: '0.0.0.0', description: 'address to bind' }),
    port: Port('TCP port; 0 picks a free port (tests)'),
    path: Type.String({
      pattern: '^/',
      default: '/mqtt',
      description: 'HTTP path of the WebSocket endpoint (ws only)',
    }),
    requireClientCert: Type.Optional(
      Type.Boolean({
        description:
          'mqtts only: refuse clients without a certificate from the local CA (default true); without one a client has no device identity',
      }),
    ),
    certFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'mqtts only: server certificate (PEM, with chain); default issued by the local CA and rotated',
      }),
    ),
    keyFile: Type.Optional(Type.String({ minLength: 1, description: 'mqtts only: private key of certFile (PEM)' })),
    caFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'mqtts only: CAs that device certificates must chain to (PEM); default the local CA',
      }),
    ),
    allowAnonymous: Type.Boolean({
      default: true,
      description:
        'clients without credentials (no user name, no certificate identity) may connect; false = only users of the password file and certificate-identified devices',
    }),
    useIdentityAsUsername: Type.Boolean({
      default: false,
      description:
        "mqtts only: the certificate's identity names the client for the ACL and the client id is free, so several clients may share one certificate (Mosquitto's use_identity_as_username); false = the client id must be the identity",
    }),
    mqttVersions: Type.Array(Type.Enum(['3.1', '3.1.1', '5']), {
      minItems: 1,
      uniqueItems: true,
      default: ['3.1', '3.1.1', '5'],
      description:
        "MQTT versions this listener accepts; a CONNECT of another version is refused (CONNACK 1, or 0x84 Unsupported Protocol Version for MQTT 5) and logged; e.g. ['3.1.1'] keeps MQTT 5 devices off a listener",
    }),
    serverCertificate: Type.Optional(
      Type.Enum(['local-ca', 'acme'], {
        description:
          "mqtts only: local-ca = issued by the local CA and rotated (default); acme = the gateway's certificate from certs.acme, swapped in place when renewed (the local CA's until the first issuance)",
      }),
    ),
  },
  { additionalProperties: false },
)

export const BrokerAuthSchema = Type.Object(
  {
    passwordFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "password file in Mosquitto's format ($7$ PBKDF2-SHA512 and $6$ lines; edit with `edge-agent users`); default <dataDir>/passwd; re-read when it changes; while it does not exist, user names are not checked",
      }),
    ),
    maxFailedLogins: Type.Integer({
      minimum: 1,
      default: 5,
      description:
        'failed logins per client address within failedLoginWindowSec; more are refused (CONNACK 5) without checking',
    }),
    failedLoginWindowSec: Type.Integer({
      minimum: 1,
      maximum: 86400,
      default: 60,
      description: 'window of maxFailedLogins',
    }),
  },
  { additionalProperties: false, default: {} },
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
      description:
        'clients asking for a longer keepalive are refused; 0 allows any (keepalive 0: see allowKeepaliveZero)',
    }),
    maxRetainedMessages: Type.Integer({
      minimum: 1,
      default: 100000,
      description:
        'retained messages (topics) clients may keep; beyond, a retained publish on a new topic is delivered but not kept (counted)',
    }),
    maxRetainedBytes: Type.Integer({
      minimum: 1,
      default: 67108864,
      description:
        'payload bytes of all retained messages clients keep; beyond, a retained publish is delivered but not kept (counted)',
    }),
    allowKeepaliveZero: Type.Boolean({
      default: true,
      description:
        'accept clients asking for no keepalive (0), as MQTT 3.1.1 and Mosquitto do; false refuses them with CONNACK 2',
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
      description: 'longest client identifier accepted, MQTT 3.1 clients too (3.1 says 23; Mosquitto accepts longer)',
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

const Filters = (description: string) => Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description }))

const AclRuleProperties = {
  publish: Filters('topic filters it may publish to (and use as Will topic)'),
  subscribe: Filters('topic filters it may subscribe within'),
  read: Filters('topics it may receive; a subscription overlapping one is allowed and only these are delivered'),
  deny: Filters('topics refused whatever the grants (publish, subscribe, delivery)'),
}

export const BrokerAclSchema = Type.Object(
  {
    file: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Mosquitto acl_file to import (topic/user/pattern lines with read|write|readwrite|deny, %u and %c); merged with the rules below',
      }),
    ),
    anonymous: Type.Optional(
      Type.Object(AclRuleProperties, {
        additionalProperties: false,
        description: 'rules of clients without a user name',
      }),
    ),
    users: Type.Array(
      Type.Object(
        {
          name: Type.String({ minLength: 1, description: 'user name (password file) or device id' }),
          ...AclRuleProperties,
        },
        { additionalProperties: false },
      ),
      { default: [], description: 'rules of one user each' },
    ),
    groups: Type.Array(
      Type.Object(
        {
          name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', maxLength: 64 }),
          members: Type.Array(Type.String({ minLength: 1 }), {
            minItems: 1,
            description: 'user names or device ids, * matches any run of characters',
          }),
          ...AclRuleProperties,
        },
        { additionalProperties: false },
      ),
      { default: [], description: 'rules of groups of users; %u / {id} = the user name, %c = the client id' },
    ),
    patterns: Type.Array(Type.Object(AclRuleProperties, { additionalProperties: false }), {
      default: [],
      description:
        'rules of every client; %u / {id} = its user name (rules using it skip anonymous clients), %c = its client id',
    }),
    onDeniedPublish: Type.Enum(['drop', 'disconnect'], {
      default: 'drop',
      description: 'a publish the ACL refuses: acknowledge and drop it (counted, logged), or close the connection',
    }),
  },
  {
    additionalProperties: false,
    default: {},
    description:
      'one ACL for every client on every listener; off (everything allowed) until a rule or file is given, then deny by default. Certificate-identified devices keep their devices.* space and get these rules by their id too',
  },
)

export const BrokerSchema = Type.Object(
  {
    listeners: Type.Array(ListenerSchema, {
      minItems: 1,
      default: [{ protocol: 'mqtt', host: '0.0.0.0', port: 1883 }],
      description: 'where devices connect',
    }),
    limits: BrokerLimitsSchema,
    auth: BrokerAuthSchema,
    acl: BrokerAclSchema,
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
    localPrefix: Type.String({ default: '', description: "prefix on the local side; empty or ending in '/'" }),
    remotePrefix: Type.String({ default: '', description: "prefix on the upstream side; empty or ending in '/'" }),
    name: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: 'rule id in logs and drop counters; default <index>:<topic>',
      }),
    ),
    priority: Type.Integer({
      minimum: -1000000,
      maximum: 1000000,
      default: 0,
      description: 'drain priority of this rule; higher leaves the buffer first (per-topic order is kept)',
    }),
    whenFull: Type.Enum(['auto', 'refuse', 'drop-oldest', 'drop-lowest-priority'], {
      default: 'auto',
      description: 'buffer full: auto = refuse QoS 1/2 (the device keeps it), drop-oldest for QoS 0',
    }),
    conflate: Type.Enum(['none', 'latest-only'], {
      default: 'none',
      description: 'latest-only keeps only the newest unsent message per topic',
    }),
    ttlSec: Type.Integer({
      minimum: 0,
      maximum: 4294967295,
      default: 604800,
      description: 'seconds a message may wait in the buffer (MQTT 5: sent as Message Expiry); 0 = forever',
    }),
    maxRatePerTopic: Type.Number({
      minimum: 0,
      default: 0,
      description: 'messages per second per topic forwarded at most; more are dropped (counted); 0 = no limit',
    }),
    retainAsPublished: Type.Boolean({
      default: true,
      description: 'keep the retain flag when forwarding; false clears it',
    }),
    retainHandling: Type.Integer({
      minimum: 0,
      maximum: 2,
      default: 0,
      description:
        'MQTT 5 subscription option for in/both rules: 0 send retained, 1 only on a new subscription, 2 never',
    }),
    bufferQos0: Type.Boolean({
      default: false,
      description: 'store QoS 0 messages while the upstream is down (default: drop, counted)',
    }),
  },
  { additionalProperties: false },
)

export const UpstreamReconnectSchema = Type.Object(
  {
    minMs: Type.Integer({ minimum: 1, default: 1000, description: 'smallest reconnect delay (decorrelated jitter)' }),
    maxMs: Type.Integer({ minimum: 1, default: 60000, description: 'largest reconnect delay' }),
    resetAfterMs: Type.Integer({
      minimum: 0,
      default: 30000,
      description: 'a connection up this long resets the backoff',
    }),
    probeIntervalMs: Type.Integer({
      minimum: 0,
      default: 500,
      description:
        'while unreachable, a TCP probe this often ends the wait as soon as the upstream listens again; 0 = off',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const UpstreamStatusSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'retained birth message on connect, last will "offline"' }),
    topic: Type.String({
      minLength: 1,
      default: 'edge-agent/{site}/status',
      description: 'placeholders {site} and {upstream}',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const UpstreamLossReportSchema = Type.Object(
  {
    enabled: Type.Boolean({
      default: true,
      description:
        'tell this upstream when buffered data of its rules is dropped: a JSON loss report, QoS 1, in order with the data',
    }),
    topic: Type.String({
      minLength: 1,
      default: 'edge-agent/{site}/drops',
      description: 'placeholders {site} and {upstream}',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const UpstreamRenewCertificateSchema = Type.Object(
  {
    enabled: Type.Boolean({
      default: false,
      description:
        "renew this upstream's client certificate (certFile/keyFile) from the upstream edge-agent's local CA, over the bridge's own session",
    }),
    atFraction: Type.Number({
      minimum: 0.1,
      maximum: 0.95,
      default: 0.66,
      description:
        "renew once this fraction of the certificate's lifetime has passed (plus jitter up to 1/20); at or above the upstream's certs.device.renewAfter",
    }),
    topicPrefix: Type.String({
      minLength: 1,
      default: 'devices/{id}/$certs',
      description: "renewal topics on the upstream (its certs.renewal.topicPrefix); {id} = the certificate's CN",
    }),
    rotateKey: Type.Boolean({
      default: true,
      description: 'make a new key pair at each renewal (false: keep keyFile)',
    }),
    timeoutMs: Type.Integer({
      minimum: 1000,
      default: 30000,
      description: "how long to wait for the upstream's reply",
    }),
    retryMinMs: Type.Integer({
      minimum: 100,
      default: 10000,
      description: 'first retry after a failure; doubles per failure',
    }),
    retryMaxMs: Type.Integer({ minimum: 100, default: 600000, description: 'longest wait between retries' }),
  },
  { additionalProperties: false, default: {} },
)

export const UpstreamSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', maxLength: 64 }),
    url: Type.String({
      pattern: '^(mqtt|mqtts|ws|wss)://',
      description: 'upstream broker, e.g. mqtt://10.0.3.10:1883',
    }),
    protocolVersion: Type.Integer({
      minimum: 4,
      maximum: 5,
      default: 5,
      description: '5 = MQTT 5, 4 = MQTT 3.1.1 (e.g. toward another edge-agent)',
    }),
    clientId: Type.String({
      default: '',
      description: 'default edge-agent.<site.name>.<name>; must be stable for the session to resume',
    }),
    username: Type.String({ default: '' }),
    passwordFile: Type.String({ default: '', description: 'file holding the password (read at every connect)' }),
    caFile: Type.String({ default: '', description: 'PEM CAs to trust (mqtts, wss); default the system roots' }),
    certFile: Type.String({ default: '', description: 'client certificate (PEM) for mutual TLS' }),
    keyFile: Type.String({ default: '', description: 'private key of certFile (PEM)' }),
    tlsServerName: Type.String({
      default: '',
      description: 'name checked in the server certificate; default the URL host',
    }),
    keepaliveSec: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 30,
      description: 'dead link detected after 1.5 × this',
    }),
    cleanStart: Type.Boolean({
      default: false,
      description: 'false resumes the session: downward subscriptions survive reconnects',
    }),
    sessionExpirySec: Type.Integer({
      minimum: 0,
      maximum: 4294967295,
      default: 604800,
      description: 'MQTT 5: how long the upstream keeps the session (and commands for us) while we are away',
    }),
    connectTimeoutMs: Type.Integer({ minimum: 100, default: 10000, description: 'TCP + TLS + CONNACK deadline' }),
    reconnect: UpstreamReconnectSchema,
    inflight: Type.Integer({
      minimum: 1,
      maximum: 65534,
      default: 100,
      description: "unacknowledged QoS 1/2 messages at most; the upstream's Receive Maximum may lower it",
    }),
    maxRatePerSec: Type.Number({
      minimum: 0,
      default: 0,
      description: 'messages per second sent upstream at most (backlog drain too); 0 = no limit',
    }),
    bridgeFlag: Type.Boolean({
      default: true,
      description: "MQTT 3.1.1: mark the connection as a bridge (Mosquitto's try_private: no echo)",
    }),
    loopDetection: Type.Boolean({
      default: true,
      description: 'read the upstream agent identity ($edge-agent/identity) and refuse to forward in a loop',
    }),
    status: UpstreamStatusSchema,
    lossReport: UpstreamLossReportSchema,
    renewCertificate: UpstreamRenewCertificateSchema,
    clientCertificate: Type.Enum(['files', 'acme'], {
      default: 'files',
      description:
        "files = certFile/keyFile (if set); acme = the gateway's own certificate from certs.acme (mqtts/wss only; reconnects when it is renewed)",
    }),
    rules: Type.Array(BridgeRuleSchema, { default: [] }),
  },
  { additionalProperties: false },
)

export const AcmeSchema = Type.Object(
  {
    directoryUrl: Type.String({
      pattern: '^https?://',
      description: "the ACME CA's directory URL, e.g. https://ca.plant.example:9000/acme/acme/directory (step-ca)",
    }),
    email: Type.String({ default: '', description: 'contact address of the ACME account (optional)' }),
    identifiers: Type.Array(Type.String({ minLength: 1, pattern: '^[A-Za-z0-9*][A-Za-z0-9.-]*$' }), {
      minItems: 1,
      description: 'DNS names in the gateway certificate (the first is its main name)',
    }),
    challenge: Type.Enum(['http-01', 'tls-alpn-01', 'dns-01'], {
      default: 'http-01',
      description:
        'http-01 and tls-alpn-01 are served by the agent itself while an order is pending; dns-01 runs dns01.command',
    }),
    http01: Type.Object(
      {
        host: Type.String({ minLength: 1, default: '0.0.0.0', description: 'address the http-01 responder binds' }),
        port: Port('port the CA connects to for http-01 (80 unless the CA is told otherwise)', 80),
      },
      { additionalProperties: false, default: {} },
    ),
    tlsAlpn01: Type.Object(
      {
        host: Type.String({ minLength: 1, default: '0.0.0.0', description: 'address the tls-alpn-01 responder binds' }),
        port: Port('port the CA connects to for tls-alpn-01 (443 unless the CA is told otherwise)', 443),
      },
      { additionalProperties: false, default: {} },
    ),
    dns01: Type.Object(
      {
        command: Type.String({
          default: '',
          description:
            'hook run as `<command> present|cleanup <record name> <TXT value>` (no shell); present returns once the record is published',
        }),
        timeoutSec: Type.Integer({
          minimum: 1,
          default: 300,
          description: 'a hook run taking longer is killed and the attempt fails',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    renewAt: Type.Number({
      minimum: 0.1,
      maximum: 0.95,
      default: 0.667,
      description:
        "renew once this fraction of the certificate's lifetime has passed (minus jitter up to 1/20), or earlier if the CA's renewal information (ARI) says so",
    }),
    maxIntervalSec: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'renew at least this often whatever the lifetime; 0 = only by renewAt and ARI',
    }),
    rotateKey: Type.Boolean({ default: true, description: 'a new key at every renewal (false: keep the current key)' }),
    caFile: Type.String({
      default: '',
      description: "extra CAs to trust for the ACME server's own HTTPS (PEM); default the system roots",
    }),
    trustFile: Type.String({
      default: '',
      description:
        'CAs the issued chain must lead to (PEM), checked before promotion; default: the chain need only be consistent',
    }),
    eab: Type.Optional(
      Type.Object(
        {
          kid: Type.String({ minLength: 1, description: 'external account binding key id, from the CA' }),
          hmacKeyFile: Type.String({ minLength: 1, description: 'file holding the base64url HMAC key of the binding' }),
        },
        { additionalProperties: false, description: 'external account binding, for CAs that require one' },
      ),
    ),
    retryMinMs: Type.Integer({
      minimum: 100,
      default: 60000,
      description: 'first retry after a failed attempt; doubles per failure, with jitter',
    }),
    retryMaxMs: Type.Integer({
      minimum: 100,
      default: 3600000,
      description: 'longest wait between attempts while the CA or the link is down',
    }),
    requestTimeoutMs: Type.Integer({
      minimum: 1000,
      default: 30000,
      description: 'timeout of one HTTP request to the CA',
    }),
    warnBeforeSec: Type.Integer({
      minimum: 0,
      default: 604800,
      description: 'warn (log, status "expiring") this long before the certificate expires',
    }),
    testUpstreams: Type.Boolean({
      default: true,
      description:
        'before promotion, a test handshake to every upstream with clientCertificate: acme; a refusal keeps the current certificate',
    }),
  },
  { additionalProperties: false },
)

const Seconds = (minimum: number, def: number, description: string) =>
  Type.Integer({ minimum, default: def, description })
const Fraction = (def: number, description: string) =>
  Type.Number({ minimum: 0.1, maximum: 0.95, default: def, description })

export const CertsSchema = Type.Object(
  {
    autoInit: Type.Boolean({
      default: false,
      description:
        'create a self-signed local CA at first start when none exists (else run `edge-agent certs init` or `certs import-ca`)',
    }),
    caName: Type.String({
      default: '',
      description: 'CN of a CA made by autoInit / certs init; default "edge-agent local CA (<site.name>)"',
    }),
    caLifetimeSec: Seconds(86400, 157680000, 'lifetime of a CA made by autoInit / certs init (default 5 years)'),
    backdateSec: Seconds(0, 3600, 'notBefore of every certificate is set this far back, for devices whose clock lags'),
    allowShortLifetimes: Type.Boolean({
      default: false,
      description: 'allow certificate lifetimes below 1 hour (tests and demos; never in production)',
    }),
    device: Type.Object(
      {
        lifetimeSec: Seconds(10, 604800, 'lifetime of device certificates issued by renewal and by default (7 days)'),
        renewAfter: Fraction(0.667, 'fraction of its lifetime after which a device may renew (2/3)'),
        maxLifetimeSec: Seconds(
          10,
          31536000,
          'longest lifetime `certs issue --lifetime` may give (factory provisioning)',
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    server: Type.Object(
      {
        lifetimeSec: Seconds(10, 604800, "lifetime of the broker's own server certificate (7 days)"),
        renewAfter: Fraction(0.667, 'fraction of its lifetime after which the server certificate is rotated'),
        hostnames: Type.Array(Type.String({ minLength: 1 }), {
          default: [],
          description:
            "extra DNS names / IP addresses in the server certificate; this host's name, localhost, 127.0.0.1 and ::1 are always in",
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    renewal: Type.Object(
      {
        enabled: Type.Boolean({ default: true, description: 'devices may renew their certificate over MQTT' }),
        topicPrefix: Type.String({
          minLength: 1,
          default: 'devices/{id}/$certs',
          description:
            'renewal topics: <prefix>/csr (device publishes) and <prefix>/cert (agent replies); {id} = device id',
        }),
        minRequestIntervalSec: Seconds(0, 10, 'a device may send at most one renewal request per this many seconds'),
      },
      { additionalProperties: false, default: {} },
    ),
    acme: Type.Optional(AcmeSchema),
    crl: Type.Object(
      {
        topic: Type.String({
          minLength: 1,
          default: '$edge/ca/crl',
          description: 'the CRL (PEM) is published retained here; every device may subscribe',
        }),
        validitySec: Seconds(60, 86400, 'CRL nextUpdate = now + this; re-signed at half'),
      },
      { additionalProperties: false, default: {} },
    ),
    clock: Type.Object(
      {
        toleranceSec: Seconds(
          1,
          300,
          'clock steps this small are normal; also the slack below the last known good time',
        ),
        maxForwardJumpSec: Seconds(
          60,
          604800,
          'a forward clock step larger than this makes the clock suspicious (issuance pauses)',
        ),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false, default: {} },
)

export const DeviceGroupSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', maxLength: 64 }),
    members: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      description: 'device ids, * matches any run of characters',
    }),
    publish: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'extra publish filters; {id} = device id',
    }),
    subscribe: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'extra subscribe filters; {id} = device id',
    }),
  },
  { additionalProperties: false },
)

export const DevicesSchema = Type.Object(
  {
    identity: Type.Enum(['cn', 'cn-or-san'], {
      default: 'cn-or-san',
      description: "the MQTT client id must equal the certificate's CN (cn) or its CN or a DNS/URI SAN (cn-or-san)",
    }),
    maxIdBytes: Type.Integer({ minimum: 1, maximum: 1024, default: 128, description: 'longest device id' }),
    publish: Type.Array(Type.String({ minLength: 1 }), {
      default: ['devices/{id}/#'],
      description: 'topic filters a certificate-identified device may publish to; {id} = its id',
    }),
    subscribe: Type.Array(Type.String({ minLength: 1 }), {
      default: ['devices/{id}/#'],
      description: 'topic filters a device may subscribe within; {id} = its id',
    }),
    onDeniedPublish: Type.Enum(['disconnect', 'drop'], {
      default: 'disconnect',
      description: 'a publish outside the space: close the connection, or acknowledge and drop it',
    }),
    groups: Type.Array(DeviceGroupSchema, { default: [], description: 'extra grants for groups of devices' }),
  },
  { additionalProperties: false, default: {} },
)

export const BufferSchema = Type.Object(
  {
    durability: Type.Enum(['full', 'normal', 'off'], {
      default: 'full',
      description:
        'full = WAL + fsync per group commit: nothing acknowledged is lost on power failure; normal = may lose the last commits on power failure (not on a crash); off = may lose the file',
    }),
    maxBytes: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'bytes of queued messages at most; 0 = 25 % of the file system, between 64 MiB and 1 GiB',
    }),
    minFreeBytes: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'free disk space the buffer never eats into; 0 = the smaller of 200 MiB and 5 % of the file system',
    }),
    maxBatch: Type.Integer({
      minimum: 1,
      maximum: 10000,
      default: 256,
      description: 'messages per group commit at most',
    }),
    batchWindowMs: Type.Integer({
      minimum: 0,
      maximum: 1000,
      default: 0,
      description:
        'extra time a commit waits to gather more messages; 0 = commit at the end of the current event-loop turn',
    }),
    maxFsyncsPerSecond: Type.Integer({
      minimum: 0,
      maximum: 10000,
      default: 100,
      description:
        'durability full: WAL fsyncs per second at most; while messages keep arriving a commit waits for the rest of 1/this s and shares the next fsync (acknowledged only after it); 0 = no bound',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const NodeRedSchema = Type.Object(
  {
    enabled: Type.Boolean({
      default: false,
      description:
        'run Node-RED inside the agent (needs the edge-agent-node-red add-on); disabled, the module is never loaded',
    }),
    host: Type.String({
      minLength: 1,
      default: '127.0.0.1',
      description: 'address of the editor and admin API; loopback unless you mean otherwise',
    }),
    port: Port('HTTP port of the editor and admin API', 1880),
    httpNodeRoot: Type.String({
      pattern: '^(/[^/].*|)$',
      default: '',
      description: "path of the flows' own HTTP endpoints (http in nodes), e.g. /api; empty = off",
    }),
    identity: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$',
      maxLength: 64,
      default: 'node-red',
      description: "identity of flows' edge out publishes in the device ACL (devices.groups may name it); with mqtts",
    }),
    maxPublishRatePerSec: Type.Number({
      minimum: 1,
      default: 1000,
      description: 'messages per second each edge out node may publish; more are dropped and counted',
    }),
    maxPayloadBytes: Type.Integer({
      minimum: 1,
      maximum: 268435455,
      default: 262144,
      description: 'largest payload an edge out node publishes; larger is refused (node error)',
    }),
    editor: Type.Boolean({
      default: true,
      description: 'serve the editor (only once a user exists: edge-agent nodered passwd USER)',
    }),
    logLevel: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace'], {
      default: 'info',
      description: "Node-RED's own log level (its lines carry component: node-red)",
    }),
  },
  { additionalProperties: false, default: {} },
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
    buffer: BufferSchema,
    upstreams: Type.Array(UpstreamSchema, { default: [] }),
    certs: CertsSchema,
    devices: DevicesSchema,
    nodeRed: NodeRedSchema,
  },
  { additionalProperties: false },
)

export type AgentConfig = Static<typeof AgentConfigSchema>
export type ListenerConfig = Static<typeof ListenerSchema>
export type BrokerConfig = Static<typeof BrokerSchema>
export type BrokerLimits = Static<typeof BrokerLimitsSchema>
export type BufferConfig = Static<typeof BufferSchema>
export type UpstreamConfig = Static<typeof UpstreamSchema>
export type CertsConfig = Static<typeof CertsSchema>
export type AcmeConfig = Static<typeof AcmeSchema>
export type DevicesConfig = Static<typeof DevicesSchema>
export type NodeRedConfig = Static<typeof NodeRedSchema>
export type BridgeRuleConfig = Static<typeof BridgeRuleSchema>
