// Creating the local CA: a new self-signed root (`certs init`), a key and CSR
// for the site's PKI to sign (`certs init --csr`), or importing the CA that PKI
// signed (`certs import-ca`). The CLI runs these once per gateway; the running
// CA (local-ca.ts) only loads what they wrote.
import { readFile, rm } from 'node:fs/promises'
import { X509Certificate as NodeX509 } from 'node:crypto'
import { CertsError } from './errors.js'
import { caExists, prepareCaDir, writeAtomic } from './ca-files.js'
import {
  caProblems,
  caSigner,
  certPem,
  createCaCsr,
  createSelfSignedCa,
  generateKeyPair,
  importPrivateKey,
  splitPem,
} from './x509.js'

/** `certs init`: a new EC P-256 key and a self-signed root. */
export async function initCa(
  dir: string,
  opts: { readonly name: string; readonly lifetimeMs: number; readonly now: number; readonly force?: boolean },
): Promise<{ certPem: string }> {
  const p = await prepareCaDir(dir)
  if (caExists(dir) && opts.force !== true) {
    throw new CertsError(
      'EDGE_ERR_CERT_CA_EXISTS',
      `a CA already exists in ${dir}; replacing it invalidates every device certificate (use --force)`,
    )
  }
  const key = await generateKeyPair()
  const cert = await createSelfSignedCa({
    key,
    name: { cn: opts.name },
    // Backdated a day: a root is trusted by devices whose clocks may lag.
    notBefore: opts.now - 86_400_000,
    notAfter: opts.now + opts.lifetimeMs,
  })
  await writeAtomic(p.caKey, key.privateKeyPem, 0o600)
  await writeAtomic(p.caCert, certPem(cert), 0o644)
  await rm(p.chain, { force: true })
  await rm(p.pendingKey, { force: true })
  await rm(p.serverCert, { force: true })
  await rm(p.serverKey, { force: true })
  return { certPem: certPem(cert) }
}

/** `certs init --csr`: a key kept here, and a CSR for the site's PKI to sign as an intermediate. */
export async function createCsr(dir: string, opts: { readonly name: string }): Promise<string> {
  const p = await prepareCaDir(dir)
  const key = await generateKeyPair()
  await writeAtomic(p.pendingKey, key.privateKeyPem, 0o600)
  return createCaCsr({ key, name: { cn: opts.name } })
}

/**
 * `certs import-ca`: installs a CA certificate signed by the site's or
 * enterprise PKI, with its key (or the pending key of `init --csr`) and the
 * issuers above it.
 */
export async function importCa(
  dir: string,
  opts: {
    readonly certPem: string
    readonly keyPem?: string
    readonly chainPem?: string
    readonly force?: boolean
    readonly now: number
  },
): Promise<{ certPem: string; problems: string[] }> {
  const p = await prepareCaDir(dir)
  if (caExists(dir) && opts.force !== true) {
    throw new CertsError('EDGE_ERR_CERT_CA_EXISTS', `a CA already exists in ${dir} (use --force to replace it)`)
  }
  const certs = splitPem(opts.certPem)
  const leaf = certs[0]
  if (leaf === undefined) throw new CertsError('EDGE_ERR_CERT_CA_INVALID', 'no PEM certificate in the CA file')
  // A CA file that is itself a bundle: the first is the CA, the rest its chain.
  const chain = [...certs.slice(1), ...splitPem(opts.chainPem ?? '')]
  const problems = caProblems(leaf, chain)
  if (problems.length > 0) throw new CertsError('EDGE_ERR_CERT_CA_INVALID', problems.join('; '))
  const node = new NodeX509(leaf)
  if (Date.parse(node.validTo) <= opts.now)
    throw new CertsError('EDGE_ERR_CERT_CA_INVALID', `CA certificate expired on ${node.validTo}`)
  let keyPem = opts.keyPem
  if (keyPem === undefined) {
    try {
      keyPem = await readFile(p.pendingKey, 'utf8')
    } catch {
      throw new CertsError('EDGE_ERR_CERT_CA_INVALID', 'no --key given and no pending key from `certs init --csr`')
    }
  }
  const key = await importPrivateKey(keyPem)
  await caSigner(leaf, key, chain) // checks that key and certificate belong together
  await writeAtomic(p.caKey, keyPem.endsWith('\n') ? keyPem : `${keyPem}\n`, 0o600)
  await writeAtomic(p.caCert, leaf, 0o644)
  if (chain.length > 0) await writeAtomic(p.chain, chain.join(''), 0o644)
  else await rm(p.chain, { force: true })
  await rm(p.pendingKey, { force: true })
  await rm(p.serverCert, { force: true })
  await rm(p.serverKey, { force: true })
  return { certPem: leaf, problems: [] }
}
