// The device side of renewal over MQTT: the reference implementation behind
// `edge-agent device renew`, small enough to port to device firmware.
//
// Steps (docs/certificates.md "Renewal protocol"):
//   1. subscribe to <prefix>/cert (QoS 1) on the session authenticated by the
//      current certificate;
//   2. make a new key pair (or reuse the current key) and a CSR whose CN is
//      the device id;
//   3. publish {"v":1,"requestId":…,"csr":…} on <prefix>/csr (QoS 1);
//   4. wait for the reply with the same requestId;
//   5. check the new certificate: it parses, names the device, holds our
//      public key and is signed by the CA we trust. Only then hand it back:
//      the caller replaces its files (two-phase, see install.ts).
import { randomUUID, createPublicKey, X509Certificate } from 'node:crypto'
import { CertsError, RenewalRefusedError } from './errors.js'
import { PROTOCOL_VERSION, parseReply, renewalTopics, type IssuedReply } from './protocol.js'
import { commonName, createCsr, generateKeyPair, importPrivateKey, splitPem } from './x509.js'

/**
 * What the protocol needs of an MQTT connection: an mqtt.js MqttClient, or
 * the bridge's upstream session (src/bridge, Bridge.control). Structural, so
 * that neither side imports the other.
 */
export interface RenewalTransport {
  subscribeAsync(topic: string, opts: { qos: 1 }): Promise<unknown>
  publishAsync(topic: string, payload: string, opts: { qos: 1 }): Promise<unknown>
  on(event: 'message', listener: (topic: string, payload: Buffer) => void): unknown
  off(event: 'message', listener: (topic: string, payload: Buffer) => void): unknown
}

export interface RenewOverMqttOptions {
  /** Connected (authenticated) with the current certificate. */
  readonly client: RenewalTransport
  readonly id: string
  /** Default `devices/{id}/$certs`. */
  readonly topicPrefix?: string
  /** Trust anchors (PEM bundle) the new certificate must chain to. */
  readonly caPem: string
  /** Current private key (PEM); reused when `rotateKey` is false. */
  readonly currentKeyPem: string
  /** Make a new key pair for the new certificate. Default true. */
  readonly rotateKey?: boolean
  /**
   * The private key (PEM) to certify, instead of a fresh one: the key of an
   * earlier request that got no reply. The gateway answers a CSR for the key
   * of its newest certificate with that certificate again, so a retry after
   * a lost reply is not refused as too early.
   */
  readonly newKeyPem?: string
  /** Default 30 000 ms. */
  readonly timeoutMs?: number
}

export interface RenewResult {
  readonly certPem: string
  readonly keyPem: string
  readonly chainPem: string
  readonly serial: string
  readonly notBefore: string
  readonly notAfter: string
  readonly renewAfter: string
  readonly keyRotated: boolean
}

export async function renewOverMqtt(o: RenewOverMqttOptions): Promise<RenewResult> {
  const { request, reply } = renewalTopics(o.topicPrefix ?? 'devices/{id}/$certs', o.id)
  const rotateKey = o.newKeyPem !== undefined || (o.rotateKey ?? true)
  let keyPem: string
  let key
  if (o.newKeyPem !== undefined) {
    key = await importPrivateKey(o.newKeyPem)
    keyPem = o.newKeyPem
  } else if (rotateKey) {
    const pair = await generateKeyPair()
    key = pair
    keyPem = pair.privateKeyPem
  } else {
    key = await importPrivateKey(o.currentKeyPem)
    keyPem = o.currentKeyPem
  }
  const csr = await createCsr({ key, cn: o.id })
  const requestId = randomUUID()
  const timeoutMs = o.timeoutMs ?? 30_000

  await o.client.subscribeAsync(reply, { qos: 1 })
  const answer = new Promise<IssuedReply>((resolve, reject) => {
    const timer = setTimeout(() => {
      o.client.off('message', onMessage)
      reject(new CertsError('EDGE_ERR_CERT_RENEWAL_FAILED', `no reply on ${reply} within ${timeoutMs} ms`))
    }, timeoutMs)
    const onMessage = (topic: string, payload: Buffer): void => {
      if (topic !== reply) return
      const r = parseReply(payload)
      if (r === undefined || r.requestId !== requestId) return
      clearTimeout(timer)
      o.client.off('message', onMessage)
      if (r.status === 'error') reject(new RenewalRefusedError(r.error, r.message, r.retryAfterSec))
      else resolve(r)
    }
    o.client.on('message', onMessage)
  })
  // The deadline runs from the subscription: a publish that fails, or that the
  // client holds until a reconnect (QoS 1 while the connection is down), must
  // neither leave the deadline's rejection unobserved nor outlast it.
  answer.catch(() => undefined)
  await Promise.race([
    o.client.publishAsync(request, JSON.stringify({ v: PROTOCOL_VERSION, requestId, csr }), { qos: 1 }),
    answer,
  ])
  const r = await answer

  const problem = checkIssued(r.certificate, o.id, keyPem, o.caPem)
  if (problem !== undefined)
    throw new CertsError('EDGE_ERR_CERT_RENEWAL_FAILED', `the new certificate does not check out: ${problem}`)
  return {
    certPem: r.certificate,
    keyPem,
    chainPem: r.chain,
    serial: r.serial,
    notBefore: r.notBefore,
    notAfter: r.notAfter,
    renewAfter: r.renewAfter,
    keyRotated: rotateKey,
  }
}

/** Why a certificate is not what we asked for, or undefined. */
export function checkIssued(certPemText: string, id: string, keyPem: string, caPem: string): string | undefined {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(certPemText)
  } catch {
    return 'it does not parse'
  }
  if (commonName(cert.subject) !== id) return `it names ${cert.subject.replace(/\n/g, ', ')}, not CN=${id}`
  const ours = createPublicKey(keyPem).export({ format: 'der', type: 'spki' })
  if (!cert.publicKey.export({ format: 'der', type: 'spki' }).equals(ours)) return 'it is not for our key'
  const anchors = splitPem(caPem).map((p) => new X509Certificate(p))
  if (!anchors.some((a) => cert.checkIssued(a) && cert.verify(a.publicKey))) return 'it is not signed by the trusted CA'
  return undefined
}
