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
import { rename } from 'node:fs/promises'
import { CertsError } from './errors.js'
import { writeAtomic } from './local-ca.js'

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
export async function installCertificate(files: CertificateFiles, pair: { readonly certPem: string; readonly keyPem: string }, o: InstallOptions): Promise<void> {
  await writeAtomic(`${files.cert}.new`, pair.certPem, 0o644)
  if (o.replaceKey) await writeAtomic(`${files.key}.new`, pair.keyPem, 0o600)
  if (o.verify !== undefined) {
    try {
      await o.verify()
    } catch (err) {
      throw new CertsError('EDGE_ERR_CERT_RENEWAL_FAILED', `the new certificate does not open a session (kept as ${files.cert}.new): ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
  }
  if (o.replaceKey) await rename(`${files.key}.new`, files.key)
  await rename(`${files.cert}.new`, files.cert)
}
