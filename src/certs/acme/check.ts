// Checks a downloaded certificate before it may replace the current one.
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { splitPem } from '../x509.js'

export interface IssuedCheck {
  /** Leaf first, then the intermediates, as the CA sent them. */
  readonly chainPem: string
  readonly keyPem: string
  readonly identifiers: readonly string[]
  /** CAs the chain must lead to (PEM); undefined: the chain need only be consistent. */
  readonly trustPem?: string | undefined
  readonly now: number
  /** Slack for a notBefore slightly in the future (clock differences). */
  readonly toleranceMs: number
}

/** What is wrong with the certificate; empty when it may be used. */
export function issuedProblems(c: IssuedCheck): string[] {
  const problems: string[] = []
  let certs: X509Certificate[]
  try {
    certs = splitPem(c.chainPem).map((p) => new X509Certificate(p))
  } catch (err) {
    return [`the chain does not parse: ${(err as Error).message}`]
  }
  const leaf = certs[0]
  if (leaf === undefined) return ['no certificate in the download']
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(c.keyPem))) problems.push('the certificate is not for our key')
  } catch (err) {
    problems.push(`the key does not load: ${(err as Error).message}`)
  }
  for (const id of c.identifiers) {
    if (leaf.checkHost(id, { subject: 'never' }) === undefined)
      problems.push(`identifier ${id} is not in the certificate`)
  }
  const notBefore = Date.parse(leaf.validFrom)
  const notAfter = Date.parse(leaf.validTo)
  if (notBefore > c.now + c.toleranceMs) problems.push(`not valid before ${new Date(notBefore).toISOString()}`)
  if (notAfter <= c.now) problems.push(`expired at ${new Date(notAfter).toISOString()}`)
  if (leaf.ca) problems.push('the leaf is a CA certificate')
  for (let i = 0; i + 1 < certs.length; i++) {
    const child = certs[i] as X509Certificate
    const parent = certs[i + 1] as X509Certificate
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey))
      problems.push(`chain element ${i} is not signed by element ${i + 1}`)
  }
  if (c.trustPem !== undefined) {
    const top = certs[certs.length - 1] as X509Certificate
    let anchors: X509Certificate[] = []
    try {
      anchors = splitPem(c.trustPem).map((p) => new X509Certificate(p))
    } catch (err) {
      problems.push(`the trust file does not parse: ${(err as Error).message}`)
    }
    const trusted = anchors.some(
      (a) => a.fingerprint256 === top.fingerprint256 || (top.checkIssued(a) && top.verify(a.publicKey)),
    )
    if (!trusted)
      problems.push(`the chain does not lead to a configured CA (top issuer: ${top.issuer.replace(/\n/g, ', ')})`)
  }
  return problems
}
