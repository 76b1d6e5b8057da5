// Installing a renewed certificate over the files a client connects with,
// shared by `edge-agent device renew` and the bridge's upstream certificate
// renewer (src/certs/certificate-renewer.ts).
//
// Two phases (thin-edge): the new pair is first written next to the current
// one as `<file>.new` (each written to a temporary name and renamed, so a
// crash never leaves half a PEM); an optional `verify` step may then prove
// the new pair works; only then are the `.new` files renamed over the
// current ones, key first. If verification fails, the current files are
// untouched and the new pair stays as `.new` for an operator to look at.
// Each rename is atomic; between the two, a reader may briefly see the new
// key with the old certificate, which a TLS handshake refuses and a client
// retries (the bridge reads the files at every connection attempt).
//
// Power cuts (test/integration/powercut/certs.test.ts): the renames are made
// durable together by one fsync of the directory, so a cut leaves the old
// pair or the new one. A file system that commits its journal between the
// two renames could still keep the new key with the old certificate:
// completeInstall() finds that pair (the key matches `<cert>.new`, not the
// certificate) and finishes the install; the agent runs it at start for its
// upstream files and `edge-agent device renew` before it reads a device's.
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { rename } from 'node:fs/promises'
import { dirname } from 'node:path'
import { CertsError } from './errors.js'
import { readOptional, syncDir, writeAtomic } from './ca-files.js'

export interface CertificateFiles {
  /** Certificate (PEM), written 0644. */
  readonly cert: string
  /** Its private key (PEM), written 0600. */
  readonly key: string
}

export interface InstallOptions {
  /** Write the key too (false when the key was kept: only the certificate changes). */
  readonly replaceKey: boolean
  /** Runs between the phases, e.g. opens a session with the new pair; a rejection keeps the current files. */
  readonly verify?: () => Promise<void>
}

/** Writes `*.new`, runs `verify` (if any), then renames over the current files. */
export async function installCertificate(
  files: CertificateFiles,
  pair: { readonly certPem: string; readonly keyPem: string },
  o: InstallOptions,
): Promise<void> {
  await writeAtomic(`${files.cert}.new`, pair.certPem, 0o644)
  if (o.replaceKey) await writeAtomic(`${files.key}.new`, pair.keyPem, 0o600)
  if (o.verify !== undefined) {
    try {
      await o.verify()
    } catch (err) {
      throw new CertsError(
        'EDGE_ERR_CERT_RENEWAL_FAILED',
        `the new certificate does not open a session (kept as ${files.cert}.new): ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      )
    }
  }
  if (o.replaceKey) await rename(`${files.key}.new`, files.key)
  await rename(`${files.cert}.new`, files.cert)
  await syncDir(dirname(files.cert))
  if (dirname(files.key) !== dirname(files.cert)) await syncDir(dirname(files.key))
}

/**
 * Finishes an install a power cut interrupted between its two renames: if
 * the key no longer matches the certificate but matches `<cert>.new`, that
 * certificate is moved in. Returns whether it did. Anything else is left alone.
 */
export async function completeInstall(files: CertificateFiles): Promise<boolean> {
  const [certPem, keyPem, newCertPem] = await Promise.all([
    readOptional(files.cert),
    readOptional(files.key),
    readOptional(`${files.cert}.new`),
  ])
  if (keyPem === undefined || newCertPem === undefined) return false
  if (certPem !== undefined && matches(certPem, keyPem)) return false
  if (!matches(newCertPem, keyPem)) return false
  await rename(`${files.cert}.new`, files.cert)
  await syncDir(dirname(files.cert))
  return true
}

function matches(certPem: string, keyPem: string): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))
  } catch {
    return false
  }
}
