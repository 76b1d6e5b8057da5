// The local broker's public option and stats types (index.ts re-exports them).
import type { PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import type { Acl } from './acl.js'
import type { AuthOptions } from './auth.js'
import type { ClientAcl } from './client-acl.js'
import type { DeviceCredential, IdentityMode, TlsMaterial } from './tls.js'

export interface ListenerOptions {
  readonly protocol: 'mqtt' | 'ws' | 'mqtts'
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  /** WebSocket HTTP path, default '/mqtt'. */
  readonly path?: string
  /** mqtts: refuse clients without a certificate from the local CA. Default true. */
  readonly requireClientCert?: boolean
  /** mqtts: server certificate (PEM, with its chain) and key; default: issued by the local CA and rotated. */
  readonly certFile?: string
  readonly keyFile?: string
  /** mqtts: trust anchors for client certificates; default: the local CA. */
  readonly caFile?: string
  /** mqtts: 'acme' = the gateway's own certificate (options.serverCertificate) as server certificate. */
  readonly serverCertificate?: 'local-ca' | 'acme'
  /** Clients without credentials (no user name, no certificate identity) may connect. Default true. */
  readonly allowAnonymous?: boolean
  /**
   * mqtts: the certificate's identity names the client for the ACL and the client id is free (Mosquitto's
   * use_identity_as_username).
   */
  readonly useIdentityAsUsername?: boolean
  /** MQTT versions accepted on this listener; default all three. */
  readonly mqttVersions?: readonly MqttVersion[]
}

export type MqttVersion = '3.1' | '3.1.1' | '5'

export interface BrokerLimitOptions {
  readonly maxConnections: number
  readonly maxPayloadBytes: number
  readonly preConnectMaxBytes: number
  /** 0 = no lower bound. */
  readonly keepaliveMinSec: number
  /** 0 = no upper bound. */
  readonly keepaliveMaxSec: number
  /**
   * Retained messages clients may keep (topics), and their payload bytes; beyond, a retained publish is delivered but
   * not kept.
   */
  readonly maxRetainedMessages?: number
  readonly maxRetainedBytes?: number
  /** Keepalive 0 (no keepalive) is accepted whatever keepaliveMaxSec says. Default true. */
  readonly allowKeepaliveZero?: boolean
  readonly maxInflightPerClient: number
  readonly connectTimeoutMs: number
  readonly maxClientIdBytes: number
  readonly maxTopicLevels: number
  readonly drainTimeoutMs: number
}

/**
 * Called for every PUBLISH a device sends, before the broker acknowledges it.
 * The PUBACK/PUBREC waits for the returned promise (its value is ignored); a
 * rejection withholds it and closes the connection, so that the device keeps
 * the message and resends.
 */
export type PublishInterceptor = (packet: Readonly<PublishPacket>, clientId: string) => Promise<unknown> | void

export interface StateSync {
  /** Whether aedes will store this publish (retained, or a persistent session subscribed). */
  needed(packet: Readonly<PublishPacket>): boolean
  /** Resolves once everything the broker stored so far is on stable storage. */
  sync(): Promise<void>
}

export interface LocalBrokerOptions {
  readonly listeners: readonly ListenerOptions[]
  readonly limits: BrokerLimitOptions
  readonly logger: Logger
  /**
   * aedes persistence, or a function returning it at start (when it needs a
   * database that is opened by an earlier component); default in memory.
   */
  readonly persistence?: unknown
  readonly onPublish?: PublishInterceptor
  /**
   * Durable broker state (retained messages, offline queues). aedes sends a
   * QoS 1 PUBACK before it stores the message; with this, a PUBACK that a
   * stored message needs is held (the connection corked) until `sync()`
   * after the store: a power cut after the PUBACK cannot take it (state-sync.ts).
   */
  readonly stateSync?: StateSync
  /** The local CA's TLS material for mqtts listeners without files of their own. */
  readonly tls?: () => TlsMaterial
  /**
   * The gateway's own certificate (certs.acme) for listeners with serverCertificate 'acme'; until there is one, the
   * local CA's.
   */
  readonly serverCertificate?: () => { readonly cert: string; readonly key: string } | undefined
  /** Username/password logins: the password file and failed-login limits. Default: no password file. */
  readonly auth?: AuthOptions
  /** The client ACL for every listener, and what a denied publish gets. Default: off (everything allowed). */
  readonly acl?: { readonly rules: ClientAcl; readonly onDeniedPublish: 'drop' | 'disconnect' }
  /** Certificate-identified devices: identity binding and topic isolation. */
  readonly devices?: DeviceOptions
}

/** Certificate-identified devices on mqtts listeners. */
export interface DeviceOptions {
  readonly acl: Acl
  /** Which certificate names the client id may match. */
  readonly identity: IdentityMode
  readonly maxIdBytes: number
  /** A PUBLISH outside the device's space: close the connection, or acknowledge and drop it. */
  readonly onDeniedPublish: 'disconnect' | 'drop'
  /** A device published on one of its request topics (e.g. a CSR); the message goes nowhere else. */
  readonly onRequest?: (req: DeviceRequest) => void
  /** Is this certificate serial revoked? Consulted at every handshake (with setRevokedSerials'). */
  readonly isRevoked?: (serial: string) => boolean
  /** Client ids that only a certificate-identified session may use (devices the CA knows). */
  readonly reservedClientId?: (clientId: string) => boolean
  /** Wall clock for credential expiry (the certs clock guard's trusted time). Default Date.now. */
  readonly now?: () => number
  /** How often sessions are checked for an expired credential, ms. Default 1000. */
  readonly sweepIntervalMs?: number
}

export interface DeviceRequest {
  readonly id: string
  readonly clientId: string
  readonly topic: string
  readonly payload: Buffer
  /** The certificate the session's TLS handshake presented (not one it renewed to since). */
  readonly credential: DeviceCredential
}

export interface BoundListener {
  readonly protocol: 'mqtt' | 'ws' | 'mqtts'
  readonly host: string
  readonly port: number
}

export interface LocalBrokerStats {
  readonly clients: number
  readonly connectionsTotal: number
  readonly messagesReceived: number
  readonly messagesDelivered: number
  /** Refused or closed connections by reason (limit name or protocol rule). */
  readonly refused: Readonly<Record<string, number>>
  readonly listeners: readonly BoundListener[]
  /** TLS connections refused before MQTT, by reason (tls.ts TlsRefusal). */
  readonly tlsRefused: Readonly<Record<string, number>>
  /** Certificate-identified sessions connected now. */
  readonly devices: number
  /** Publishes and subscriptions refused by the device ACL, and sessions closed by credential. */
  readonly denied: Readonly<Record<string, number>>
}

/** What LocalBroker.reconfigure can change live. */
export interface BrokerReconfigure {
  readonly limits?: BrokerLimitOptions
  readonly acl?: Acl
  readonly onDeniedPublish?: 'disconnect' | 'drop'
}

/** Limits read once at start (aedes options, listener sockets); changing them needs a restart. */
export const RESTART_LIMITS: readonly (keyof BrokerLimitOptions)[] = [
  'maxConnections',
  'maxPayloadBytes',
  'maxInflightPerClient',
  'connectTimeoutMs',
  'maxTopicLevels',
  'drainTimeoutMs',
]
