// The local issuing CA and its state directory, `<dataDir>/certs/`:
//
//   ca.key          0600  CA private key (PKCS#8 PEM); never leaves this directory
//   ca.crt                CA certificate
//   chain.pem             issuers above the CA when it is an imported intermediate
//   ca.pending.key  0600  key waiting for its certificate (`certs init --csr`)
//   server.key      0600  the broker's TLS key, server.crt its certificate
//   issued/<SERIAL>.pem   every certificate issued and not yet pruned
//   revoked/<SERIAL>.json revocations, one file each
//   crl.pem, crl.der      the CRL; crl.number its sequence
//   clock.json            last-known-good time (see clock.ts)
//
// The running agent and the CLI (`certs issue`, `certs revoke`) share this
// directory. Writers never rewrite a shared index: each certificate and each
// revocation is its own file, written to a temporary name and renamed, so two
// processes cannot corrupt each other. The CRL is rebuilt from revoked/
// under a lock file, so its number only grows.
//
// Invariants:
// - Nothing is issued while the clock guard says the clock is suspicious.
// - notBefore is backdated and never before the CA's notBefore; notAfter is
//   never after the CA's notAfter (a leaf must not outlive its issuer).
// - Key files are created 0600 and refused on load if group or others can read them.
//
// Where things are: the paths and the atomic writes in ca-files.ts; creating
// or importing the CA (`certs init`, `certs import-ca`) in ca-setup.ts; this
// file loads the CA, issues, keeps the issued and revoked indexes and signs the CRL.
import { readFile, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { X509Certificate as NodeX509 } from 'node:crypto'
import type * as x509 from '@peculiar/x509'
import { CertsError } from './errors.js'
import type { ClockGuard } from './clock.js'
import { deviceIdProblem } from './identity.js'
import {
  assertPrivate,
  caExists,
  caPaths,
  prepareCaDir,
  readOptional,
  withLock,
  writeAtomic,
  type CaPaths,
} from './ca-files.js'
import { createCsr, importCa, initCa } from './ca-setup.js'
import {
  caSigner,
  certPem,
  crlNextUpdate,
  crlPem,
  importPrivateKey,
  newSerial,
  normalizeSerial,
  signCrl,
  signLeaf,
  splitPem,
  summarizeNode,
  type CaSigner,
  type CryptoKey,
  type LeafProfile,
  type RevocationReason,
  REVOCATION_REASONS,
} from './x509.js'

export interface IssuedRecord {
  readonly serial: string
  /** Subject CN: the device id (or the broker's host name for server certificates). */
  readonly id: string
  readonly profile: LeafProfile
  readonly notBefore: number
  readonly notAfter: number
  readonly fingerprint256: string
}

export interface RevokedRecord {
  readonly serial: string
  readonly id: string
  readonly revokedAt: number
  readonly notAfter: number
  readonly reason: string
}

export interface IssuedCert extends IssuedRecord {
  readonly certPem: string
}

export interface IssueRequest {
  readonly id: string
  readonly profile: LeafProfile
  /** SPKI, CSR public key or CryptoKey. */
  readonly publicKey: ArrayBuffer | x509.PublicKey | CryptoKey
  readonly lifetimeMs: number
  readonly dnsNames?: readonly string[]
  readonly ipAddresses?: readonly string[]
  /** Issue even though the clock is suspicious (server bootstrap; dates use the trusted estimate). */
  readonly despiteClock?: boolean
}

export interface LocalCaOptions {
  /** `<dataDir>/certs` */
  readonly dir: string
  readonly guard: ClockGuard
  /** notBefore = now - backdateMs. */
  readonly backdateMs: number
  /** CRL nextUpdate = thisUpdate + crlValidityMs. */
  readonly crlValidityMs: number
  /** Longest device id in bytes. */
  readonly maxIdBytes?: number
}

export interface CrlFiles {
  readonly pem: string
  readonly der: Buffer
  readonly number: number
  readonly thisUpdate: number
  readonly nextUpdate: number
}

/** Keep expired certificates and revocations on disk this long (for `certs list --all` and audits). */
const RETAIN_EXPIRED_MS = 30 * 86_400_000

export class LocalCa {
  readonly paths: CaPaths
  readonly #opts: LocalCaOptions
  #signer: CaSigner | undefined
  #issued = new Map<string, IssuedRecord>()
  #newest = new Map<string, IssuedRecord>()
  readonly #revoked = new Map<string, RevokedRecord>()

  constructor(opts: LocalCaOptions) {
    this.#opts = opts
    this.paths = caPaths(opts.dir)
  }

  static exists(dir: string): boolean {
    return caExists(dir)
  }

  /** Creates the state directory (0700), tightening it if it already exists. */
  static prepareDir(dir: string): Promise<CaPaths> {
    return prepareCaDir(dir)
  }

  /** `certs init`: a new EC P-256 key and a self-signed root (ca-setup.ts). */
  static init(dir: string, opts: Parameters<typeof initCa>[1]): Promise<{ certPem: string }> {
    return initCa(dir, opts)
  }

  /** `certs init --csr` (ca-setup.ts). */
  static createCsr(dir: string, opts: { readonly name: string }): Promise<string> {
    return createCsr(dir, opts)
  }

  /** `certs import-ca` (ca-setup.ts). */
  static importCa(dir: string, opts: Parameters<typeof importCa>[1]): Promise<{ certPem: string; problems: string[] }> {
    return importCa(dir, opts)
  }

  /** Loads the CA, the issued index and the revocations. */
  async load(): Promise<void> {
    const p = await LocalCa.prepareDir(this.#opts.dir)
    if (!LocalCa.exists(p.dir)) {
      throw new CertsError(
        'EDGE_ERR_CERT_CA_MISSING',
        `no local CA in ${p.dir}: run \`edge-agent certs init\` or \`edge-agent certs import-ca\``,
      )
    }
    await assertPrivate(p.caKey)
    const [keyPem, caPem, chainPem] = await Promise.all([
      readFile(p.caKey, 'utf8'),
      readFile(p.caCert, 'utf8'),
      readOptional(p.chain),
    ])
    const key = await importPrivateKey(keyPem)
    this.#signer = await caSigner(caPem, key, splitPem(chainPem ?? ''))
    await this.reloadIssued()
    await this.reloadRevocations()
  }

  get signer(): CaSigner {
    if (this.#signer === undefined) throw new CertsError('EDGE_ERR_CERT_CA_MISSING', 'CA not loaded')
    return this.#signer
  }

  /** The CA certificate followed by its issuers: what devices get as ca.crt. */
  bundlePem(): string {
    const s = this.signer
    return [s.certPem, ...s.chainPem].join('')
  }

  /** Issues and records a certificate. */
  async issue(req: IssueRequest): Promise<IssuedCert> {
    const problem = deviceIdProblem(req.id, this.#opts.maxIdBytes)
    if (problem !== undefined && req.profile === 'client') {
      throw new CertsError(
        'EDGE_ERR_CERT_IDENTITY_INVALID',
        `device id ${JSON.stringify(req.id.slice(0, 200))} ${problem}`,
      )
    }
    const guard = this.#opts.guard
    const clock = guard.assess()
    if (clock.state !== 'ok' && req.despiteClock !== true) {
      throw new CertsError('EDGE_ERR_CERT_CLOCK_SUSPICIOUS', `clock is suspicious (${clock.reason ?? ''}): not issuing`)
    }
    const s = this.signer
    const now = guard.trustedNow()
    let floor = guard.notBeforeFloor()
    if (clock.lastKnownGood !== null && clock.state !== 'ok') floor = Math.max(floor, clock.lastKnownGood)
    const notBefore = Math.max(s.notBefore, Math.min(floor, now) - this.#opts.backdateMs)
    const notAfter = Math.min(s.notAfter, Math.max(now, floor) + req.lifetimeMs)
    if (notAfter <= now)
      throw new CertsError(
        'EDGE_ERR_CERT_ISSUE_FAILED',
        `the local CA expired on ${new Date(s.notAfter).toISOString()}`,
      )
    const serial = newSerial()
    let cert: x509.X509Certificate
    try {
      cert = await signLeaf({
        ca: s,
        subject: { cn: req.id },
        publicKey: req.publicKey,
        serial,
        notBefore,
        notAfter,
        profile: req.profile,
        dnsNames: req.dnsNames ?? [],
        ipAddresses: req.ipAddresses ?? [],
      })
    } catch (err) {
      throw new CertsError(
        'EDGE_ERR_CERT_ISSUE_FAILED',
        `signing failed: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      )
    }
    const pem = certPem(cert)
    const record: IssuedRecord = {
      serial: normalizeSerial(serial),
      id: req.id,
      profile: req.profile,
      // X.509 time has second resolution
      notBefore: Math.floor(notBefore / 1000) * 1000,
      notAfter: Math.floor(notAfter / 1000) * 1000,
      fingerprint256: new NodeX509(pem).fingerprint256,
    }
    await writeAtomic(join(this.paths.issuedDir, `${record.serial}.pem`), pem, 0o644)
    this.#remember(record)
    await guard.commit()
    return { ...record, certPem: pem }
  }

  /** The certificate with the latest notBefore issued to `id` (device profile). */
  newest(id: string): IssuedRecord | undefined {
    return this.#newest.get(id)
  }

  get(serial: string): IssuedRecord | undefined {
    return this.#issued.get(normalizeSerial(serial))
  }

  /** The PEM of a certificate issued here, or undefined if this CA holds no such file. */
  async issuedPem(serial: string): Promise<string | undefined> {
    const record = this.#issued.get(normalizeSerial(serial))
    if (record === undefined) return undefined
    try {
      return await readFile(join(this.paths.issuedDir, `${record.serial}.pem`), 'utf8')
    } catch {
      return undefined
    }
  }

  list(): IssuedRecord[] {
    return [...this.#issued.values()].sort((a, b) => a.id.localeCompare(b.id) || a.notBefore - b.notBefore)
  }

  isRevoked(serial: string): boolean {
    return this.#revoked.has(normalizeSerial(serial))
  }

  revokedSerials(): ReadonlySet<string> {
    return new Set(this.#revoked.keys())
  }

  revocations(): RevokedRecord[] {
    return [...this.#revoked.values()]
  }

  /** Re-reads issued/ (another process may have issued). Prunes long-expired files. */
  async reloadIssued(): Promise<void> {
    const now = this.#opts.guard.trustedNow()
    const names = await readdir(this.paths.issuedDir)
    const found: IssuedRecord[] = []
    for (const f of names) {
      if (!f.endsWith('.pem')) continue
      const file = join(this.paths.issuedDir, f)
      let record: IssuedRecord
      try {
        record = recordOf(await readFile(file, 'utf8'))
      } catch {
        continue // a foreign or torn file: ignore
      }
      if (record.notAfter < now - RETAIN_EXPIRED_MS) {
        await rm(file, { force: true })
        continue
      }
      found.push(record)
    }
    // Swap in one step: issue() and newest() may run while the files are read.
    const before = [...this.#issued.values()]
    this.#issued = new Map()
    this.#newest = new Map()
    for (const r of [...found, ...before.filter((r) => r.notAfter >= now - RETAIN_EXPIRED_MS)]) this.#remember(r)
  }

  /** Takes note of one file another process (the CLI) wrote into issued/. */
  async noteIssuedFile(name: string): Promise<void> {
    if (!name.endsWith('.pem') || this.#issued.has(name.slice(0, -4))) return
    try {
      this.#remember(recordOf(await readFile(join(this.paths.issuedDir, name), 'utf8')))
    } catch {
      // renamed away or torn: the periodic reload settles it
    }
  }

  /** Re-reads revoked/; resolves with the serials not seen before. */
  async reloadRevocations(): Promise<RevokedRecord[]> {
    const now = this.#opts.guard.trustedNow()
    const added: RevokedRecord[] = []
    const seen = new Set<string>()
    for (const f of await readdir(this.paths.revokedDir)) {
      if (!f.endsWith('.json')) continue
      let r: RevokedRecord
      try {
        r = JSON.parse(await readFile(join(this.paths.revokedDir, f), 'utf8')) as RevokedRecord
      } catch {
        continue
      }
      if (typeof r.serial !== 'string') continue
      if (r.notAfter < now - RETAIN_EXPIRED_MS) {
        await rm(join(this.paths.revokedDir, f), { force: true })
        continue
      }
      const serial = normalizeSerial(r.serial)
      seen.add(serial)
      if (!this.#revoked.has(serial)) {
        const rec = { ...r, serial }
        this.#revoked.set(serial, rec)
        added.push(rec)
      }
    }
    for (const s of [...this.#revoked.keys()]) if (!seen.has(s)) this.#revoked.delete(s)
    return added
  }

  /**
   * Revokes every unexpired certificate of `id`, or one `serial`. Writes the
   * revocation files and a new CRL; resolves with what was revoked.
   */
  async revoke(target: {
    readonly id?: string
    readonly serial?: string
    readonly reason?: string
  }): Promise<RevokedRecord[]> {
    await this.reloadIssued()
    await this.reloadRevocations()
    const now = this.#opts.guard.trustedNow()
    let victims: IssuedRecord[]
    if (target.serial !== undefined) {
      const r = this.get(target.serial)
      if (r === undefined)
        throw new CertsError('EDGE_ERR_CERT_NOT_FOUND', `no certificate with serial ${target.serial} was issued here`)
      victims = [r]
    } else if (target.id !== undefined) {
      victims = [...this.#issued.values()].filter(
        (r) => r.id === target.id && r.profile === 'client' && r.notAfter > now,
      )
      if (victims.length === 0)
        throw new CertsError(
          'EDGE_ERR_CERT_NOT_FOUND',
          `no unexpired certificate for device ${JSON.stringify(target.id)}`,
        )
    } else throw new CertsError('EDGE_ERR_CERT_NOT_FOUND', 'nothing to revoke: give a device id or a serial')
    const out: RevokedRecord[] = []
    for (const v of victims) {
      if (this.#revoked.has(v.serial)) continue
      const rec: RevokedRecord = {
        serial: v.serial,
        id: v.id,
        revokedAt: now,
        notAfter: v.notAfter,
        reason: target.reason ?? 'unspecified',
      }
      await writeAtomic(join(this.paths.revokedDir, `${v.serial}.json`), JSON.stringify(rec) + '\n', 0o644)
      this.#revoked.set(v.serial, rec)
      out.push(rec)
    }
    await this.writeCrl()
    return out
  }

  /** Signs a CRL over the current revocations and writes crl.pem / crl.der. */
  async writeCrl(): Promise<CrlFiles> {
    return withLock(this.paths.lock, async () => {
      await this.reloadRevocations()
      const guard = this.#opts.guard
      const now = guard.trustedNow()
      const number = (Number((await readOptional(this.paths.crlNumber))?.trim()) || 0) + 1
      const thisUpdate = Math.max(
        this.signer.notBefore,
        Math.min(now, guard.notBeforeFloor()) - Math.min(this.#opts.backdateMs, 3_600_000),
      )
      const nextUpdate = Math.min(this.signer.notAfter, now + this.#opts.crlValidityMs)
      const entries = [...this.#revoked.values()]
        .filter((r) => r.notAfter > now - 86_400_000) // RFC 5280 §3.3: expired entries may go
        .map((r) => ({
          serial: r.serial,
          revokedAt: Math.max(thisUpdate, Math.min(r.revokedAt, now)),
          reason: reasonOf(r.reason),
        }))
      const crl = await signCrl({ ca: this.signer, entries, thisUpdate, nextUpdate, number })
      const der = Buffer.from(crl.rawData)
      const pem = crlPem(crl)
      await writeAtomic(this.paths.crlDer, der, 0o644)
      await writeAtomic(this.paths.crlPem, pem, 0o644)
      await writeAtomic(this.paths.crlNumber, `${number}\n`, 0o644)
      return {
        pem,
        der,
        number,
        thisUpdate: Math.floor(thisUpdate / 1000) * 1000,
        nextUpdate: Math.floor(nextUpdate / 1000) * 1000,
      }
    })
  }

  /** The CRL on disk, if any, with its nextUpdate. */
  async readCrl(): Promise<{ pem: string; nextUpdate: number } | undefined> {
    const pem = await readOptional(this.paths.crlPem)
    if (pem === undefined) return undefined
    const nextUpdate = crlNextUpdate(pem)
    return nextUpdate === undefined ? undefined : { pem, nextUpdate }
  }

  #remember(r: IssuedRecord): void {
    this.#issued.set(r.serial, r)
    if (r.profile !== 'client') return
    const prev = this.#newest.get(r.id)
    if (
      prev === undefined ||
      r.notBefore > prev.notBefore ||
      (r.notBefore === prev.notBefore && r.notAfter > prev.notAfter)
    )
      this.#newest.set(r.id, r)
  }
}

function reasonOf(reason: string): RevocationReason {
  return (REVOCATION_REASONS as readonly string[]).includes(reason) ? (reason as RevocationReason) : 'unspecified'
}

function recordOf(pem: string): IssuedRecord {
  const c = new NodeX509(pem)
  const s = summarizeNode(c)
  const server = (c.keyUsage ?? []).includes('1.3.6.1.5.5.7.3.1')
  return {
    serial: s.serial,
    id: s.cn,
    profile: server ? 'server' : 'client',
    notBefore: s.notBefore,
    notAfter: s.notAfter,
    fingerprint256: s.fingerprint256,
  }
}
