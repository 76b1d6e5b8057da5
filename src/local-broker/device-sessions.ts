// Certificate-identified device sessions: who a connection is (identify, at
// CONNECT), and when its session must end (sweep for an expired credential,
// revoke, refresh after a renewal over MQTT).
//
// Node never re-checks a certificate after the handshake, so a session lives
// exactly as long as the newest credential that authenticated it: the sweep
// closes it when that expires, and a revocation of any of its serials closes
// it at once.
import type { X509Certificate } from 'node:crypto'
import type { Duplex } from 'node:stream'
import type { Client } from 'aedes'
import type { Logger } from 'pino'
import type { DeviceAcl } from './acl.js'
import type { BrokerCounters } from './counters.js'
import type { DeviceOptions } from './options.js'
import { listenerPolicy } from './auth.js'
import { certificateDeviceId, normalizeSerial, type DeviceCredential } from './tls.js'

/**
 * Identity refusals: no certificate, client id not the certificate's, a device's id taken by another, Will outside
 * the space.
 */
export type IdentityReason =
  'certificateRequired' | 'identityMismatch' | 'identityInvalid' | 'clientIdReserved' | 'willDenied'

/** An identified session: who it is, what it may do, until when. */
export interface DeviceSession {
  readonly id: string
  readonly acl: DeviceAcl
  /** Serials of the certificates that authenticated this session (handshake, then renewals over it). */
  readonly serials: Set<string>
  /** The newest of those credentials (the certificate it last renewed to). */
  current: DeviceCredential
  /**
   * The certificate of the TLS handshake: what the device still holds if the
   * reply to its renewal was lost. Renewal requests carry this one, so that a
   * retry with the key of that lost reply gets the certificate again instead of
   * "too-early" against the certificate it never received.
   */
  readonly handshake: DeviceCredential
  notAfter: number
}

const kSession = Symbol('edge-agent.deviceSession')
const kPeer = Symbol('edge-agent.peerCertificate')
type SessionClient = Client & { [kSession]?: DeviceSession }
/** On a TLS connection: the checked client certificate, or null if none was presented (allowed). */
type PeerConn = Duplex & { [kPeer]?: X509Certificate | null }

/** Records the checked client certificate of a TLS connection (null: none presented, allowed). */
export function setPeerCertificate(conn: Duplex, cert: X509Certificate | null): void {
  ;(conn as PeerConn)[kPeer] = cert
}

/** The checked client certificate of a connection: undefined on plain listeners, null if none was presented. */
export function peerCertificate(conn: Duplex): X509Certificate | null | undefined {
  return (conn as PeerConn)[kPeer]
}

export function commonNameOf(cert: X509Certificate): string {
  const line = cert.subject.split('\n').find((l) => l.startsWith('CN='))
  return line === undefined ? '' : line.slice(3, 203)
}

export class DeviceSessions {
  #devices: DeviceOptions | undefined
  readonly #log: Logger
  readonly #counters: BrokerCounters
  /** Identified sessions by client id. */
  readonly #sessions = new Map<string, SessionClient>()
  #revoked: ReadonlySet<string> = new Set()
  #sweep: NodeJS.Timeout | undefined

  constructor(devices: DeviceOptions | undefined, log: Logger, counters: BrokerCounters) {
    this.#devices = devices
    this.#log = log
    this.#counters = counters
  }

  /**
   * Live reload: new device options (ACL, onDeniedPublish); connected sessions
   * take the new ACL at once (their next publish, subscribe or delivery).
   */
  reconfigure(devices: DeviceOptions | undefined): void {
    this.#devices = devices
    if (devices === undefined) return
    for (const client of this.#sessions.values()) {
      const session = client[kSession]
      if (session !== undefined) client[kSession] = { ...session, acl: devices.acl.forDevice(session.id) }
    }
  }

  /** Certificate-identified sessions connected now. */
  get size(): number {
    return this.#sessions.size
  }

  start(): void {
    if (this.#devices === undefined || this.#sweep !== undefined) return
    this.#sweep = setInterval(() => this.sweep(), this.#devices.sweepIntervalMs ?? 1000)
    this.#sweep.unref()
  }

  stop(): void {
    if (this.#sweep !== undefined) clearInterval(this.#sweep)
  }

  /** The session of a client identified by its certificate, if any. */
  sessionOf(client: Client | null): DeviceSession | undefined {
    return client === null ? undefined : (client as SessionClient)[kSession]
  }

  /**
   * Binds a connection's certificate to the MQTT session (preConnect). On a
   * TLS connection with a certificate the client id must be the certificate's
   * device id (an empty one takes the CN); without one, a client id that
   * belongs to a device is refused, so nobody takes over a device's session.
   * On a listener with useIdentityAsUsername the CN names the device and the
   * client id is free (two clients may share one certificate).
   */
  identify(
    client: Client,
    packet: { clientId: string; will?: { topic: string } | undefined },
  ): IdentityReason | undefined {
    const devices = this.#devices
    const peer = peerCertificate(client.conn)
    if (peer === undefined || peer === null) {
      if (devices === undefined) return undefined
      const taken = this.#sessions.has(packet.clientId) || devices.reservedClientId?.(packet.clientId) === true
      return taken ? 'clientIdReserved' : undefined
    }
    if (devices === undefined) return undefined
    // use-identity-as-username: the certificate names the device, the client id is the client's own
    const asUsername = listenerPolicy(client.conn)?.useIdentityAsUsername === true
    const result = certificateDeviceId(peer, asUsername ? '' : packet.clientId, devices.identity, devices.maxIdBytes)
    if (!result.ok) return result.reason === 'identity-mismatch' ? 'identityMismatch' : 'identityInvalid'
    const acl = devices.acl.forDevice(result.id)
    // A Will is a publish made later on the device's behalf: check it now [MQTT-3.1.2-8].
    if (packet.will !== undefined && acl.publish(packet.will.topic) !== 'allow') return 'willDenied'
    if (packet.clientId === '' && !asUsername) packet.clientId = result.id // clientId := CN
    const c = result.credential
    ;(client as SessionClient)[kSession] = {
      id: result.id,
      acl,
      serials: new Set([c.serial]),
      current: c,
      handshake: c,
      notAfter: c.notAfter,
    }
    return undefined
  }

  /** aedes 'client': the CONNECT was accepted. */
  connected(client: Client): void {
    if ((client as SessionClient)[kSession] !== undefined) this.#sessions.set(client.id, client)
  }

  /** aedes 'clientDisconnect'. */
  disconnected(client: Client): void {
    if (this.#sessions.get(client.id) === client) this.#sessions.delete(client.id)
  }

  isRevoked(serial: string): boolean {
    return this.#revoked.has(serial) || this.#devices?.isRevoked?.(serial) === true
  }

  /** Replaces the revoked serials and closes the sessions that rest on one. */
  setRevokedSerials(serials: Iterable<string>): void {
    this.#revoked = new Set([...serials].map(normalizeSerial))
    for (const client of [...this.#sessions.values()]) {
      const session = client[kSession]
      if (session !== undefined && [...session.serials].some((s) => this.#revoked.has(s)))
        this.#close(client, 'revoked')
    }
  }

  /** Closes the session of `clientId`, if connected; true if there was one. */
  disconnect(clientId: string, reason: string): boolean {
    const client = this.#sessions.get(clientId)
    if (client === undefined) return false
    this.#close(client, reason)
    return true
  }

  /** A renewal over the session: it now rests on the new credential too, and lives until that one expires. */
  refresh(clientId: string, credential: DeviceCredential): void {
    const session = this.#sessions.get(clientId)?.[kSession]
    if (session === undefined) return
    session.serials.add(normalizeSerial(credential.serial))
    session.notAfter = Math.max(session.notAfter, credential.notAfter)
    if (credential.notBefore >= session.current.notBefore)
      session.current = { ...credential, serial: normalizeSerial(credential.serial) }
  }

  /** Closes the sessions whose credential has expired (by the devices' clock). */
  sweep(): void {
    const now = this.now()
    for (const client of [...this.#sessions.values()]) {
      const session = client[kSession]
      if (session !== undefined && session.notAfter <= now) this.#close(client, 'credentialExpired')
    }
  }

  /** The devices' trusted wall clock. */
  now(): number {
    return this.#devices?.now?.() ?? Date.now()
  }

  #close(client: SessionClient, reason: string): void {
    const session = client[kSession]
    this.#sessions.delete(client.id)
    this.#counters.deny(reason)
    this.#log.warn({ deviceId: session?.id, clientId: client.id, reason }, 'device session closed')
    client.close()
  }
}
