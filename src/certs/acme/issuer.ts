// Account and orders with acme-client. The account key and registration live
// in the state directory (0600); the certificate key is made by the caller
// and only its CSR is sent.
import { readFile } from 'node:fs/promises'
import { Agent as HttpsAgent } from 'node:https'
import { join } from 'node:path'
import * as acme from 'acme-client'
import type { Logger } from 'pino'
import { writeAtomic } from '../ca-files.js'
import { AcmeError, isAcmeError } from './errors.js'
import { getJson } from './http.js'
import type { ChallengeResponder } from './challenges.js'
import { ariCertId, parseRenewalInfo } from './ari.js'
import type { RenewalWindow } from './schedule.js'

export interface AcmeIssuerOptions {
  readonly directoryUrl: string
  readonly email: string
  /** Extra trust for the ACME server's own HTTPS (PEM file), read at each order. */
  readonly caFile?: string | undefined
  /** External account binding; the HMAC key (base64url) is read from its file at each order. */
  readonly eab?: { readonly kid: string; readonly hmacKeyFile: string } | undefined
  /** Where account.key and account.json live. */
  readonly dir: string
  readonly responder: ChallengeResponder
  readonly logger: Logger
  readonly requestTimeoutMs: number
}

export interface AcmeDirectory {
  readonly newNonce: string
  readonly newAccount: string
  readonly newOrder: string
  readonly renewalInfo?: string | undefined
}

/** Status polling after a challenge or finalization: quick first, then backing off. */
const POLL = { backoffAttempts: 12, backoffMin: 500, backoffMax: 10_000 }

export class AcmeIssuer {
  readonly #o: AcmeIssuerOptions
  readonly #log: Logger
  #accountKey: Buffer | undefined

  constructor(o: AcmeIssuerOptions) {
    this.#o = o
    this.#log = o.logger
  }

  /** Reads the directory: unreachable and not-ACME are told apart here. */
  async directory(): Promise<AcmeDirectory> {
    const url = this.#o.directoryUrl
    const r = await getJson(url, { ca: await this.#caPem(), timeoutMs: this.#o.requestTimeoutMs })
    const d = r.body as Partial<Record<string, unknown>> | undefined
    if (r.status !== 200 || d === undefined || typeof d !== 'object' || d === null) {
      throw new AcmeError(
        'EDGE_ERR_ACME_NOT_ACME',
        `${url} answered HTTP ${r.status} without an ACME directory (JSON with newNonce, newAccount, newOrder)`,
      )
    }
    for (const k of ['newNonce', 'newAccount', 'newOrder']) {
      if (typeof d[k] !== 'string')
        throw new AcmeError('EDGE_ERR_ACME_NOT_ACME', `${url} is not an ACME directory: no ${k}`)
    }
    return {
      newNonce: d['newNonce'] as string,
      newAccount: d['newAccount'] as string,
      newOrder: d['newOrder'] as string,
      renewalInfo: typeof d['renewalInfo'] === 'string' ? d['renewalInfo'] : undefined,
    }
  }

  /** ACME Renewal Information for a certificate (RFC 9773), if the CA publishes it. */
  async renewalWindow(chainPem: string): Promise<RenewalWindow | undefined> {
    const dir = await this.directory()
    if (dir.renewalInfo === undefined) return undefined
    const id = ariCertId(chainPem)
    if (id === undefined) return undefined
    const r = await getJson(`${dir.renewalInfo.replace(/\/$/, '')}/${id}`, {
      ca: await this.#caPem(),
      timeoutMs: this.#o.requestTimeoutMs,
    })
    if (r.status !== 200) return undefined
    const retryAfter = r.headers['retry-after']
    const info = parseRenewalInfo(r.body, Array.isArray(retryAfter) ? retryAfter[0] : retryAfter, Date.now())
    if (info !== undefined)
      this.#log.info(
        {
          start: new Date(info.window.start).toISOString(),
          end: new Date(info.window.end).toISOString(),
          explanationUrl: info.explanationUrl,
        },
        'acme renewal window',
      )
    return info?.window
  }

  /** One order: account (created or found by its key), challenges, finalization; resolves with the PEM chain. */
  async issue(o: { keyPem: string; identifiers: readonly string[] }): Promise<string> {
    await this.directory()
    configureHttp(this.#o.requestTimeoutMs, await this.#caPem())
    const accountKey = await this.#loadAccountKey()
    const eab = this.#o.eab
    const hmacKey = eab === undefined ? undefined : (await this.#read(eab.hmacKeyFile, 'EAB HMAC key file')).trim()
    const newClient = (accountUrl: string | undefined): acme.Client =>
      new acme.Client({
        directoryUrl: this.#o.directoryUrl,
        accountKey,
        ...POLL,
        ...(accountUrl === undefined ? {} : { accountUrl }),
        ...(eab === undefined || hmacKey === undefined ? {} : { externalAccountBinding: { kid: eab.kid, hmacKey } }),
      })
    const register = async (): Promise<acme.Client> => {
      const c = newClient(undefined)
      try {
        await c.createAccount({
          termsOfServiceAgreed: true,
          ...(this.#o.email === '' ? {} : { contact: [`mailto:${this.#o.email}`] }),
        })
      } catch (err) {
        throw classify(err, 'account registration refused')
      }
      await this.#saveAccount(c.getAccountUrl())
      return c
    }
    const saved = await this.#savedAccountUrl()
    const client = saved === undefined ? await register() : newClient(saved)
    const [, csr] = await acme.crypto.createCsr({ altNames: [...o.identifiers] }, o.keyPem)
    const r = this.#o.responder
    await r.open()
    try {
      const order = (c: acme.Client): Promise<string> =>
        c.auto({
          csr,
          ...(this.#o.email === '' ? {} : { email: this.#o.email }),
          termsOfServiceAgreed: true,
          challengePriority: [r.type],
          skipChallengeVerification: true,
          challengeCreateFn: async (authz, challenge, keyAuthorization) => {
            this.#log.debug({ identifier: authz.identifier.value, type: challenge.type }, 'acme challenge presented')
            await r.present({
              identifier: authz.identifier.value,
              token: (challenge as { token: string }).token,
              keyAuthorization,
              authz,
            })
          },
          challengeRemoveFn: async (authz, challenge, keyAuthorization) => {
            await r.cleanup({
              identifier: authz.identifier.value,
              token: (challenge as { token: string }).token,
              keyAuthorization,
              authz,
            })
          },
        })
      try {
        return await order(client)
      } catch (err) {
        // A CA that lost its accounts (a rebuilt step-ca, a restarted test
        // CA) no longer knows the saved URL: register again, once.
        if (saved === undefined || !accountGone(err)) throw err
        this.#log.warn(
          { account: saved, err: (err as Error).message },
          'acme account unknown to the CA; registering again',
        )
        return await order(await register())
      }
    } catch (err) {
      throw classify(err, 'order failed')
    } finally {
      await r.close()
    }
  }

  async #caPem(): Promise<string | undefined> {
    return this.#o.caFile === undefined ? undefined : this.#read(this.#o.caFile, 'CA file')
  }

  async #read(file: string, what: string): Promise<string> {
    try {
      return await readFile(file, 'utf8')
    } catch (err) {
      throw new AcmeError('EDGE_ERR_ACME_STATE', `cannot read ${what} ${file}: ${(err as Error).message}`, {
        cause: err,
      })
    }
  }

  async #loadAccountKey(): Promise<Buffer> {
    if (this.#accountKey !== undefined) return this.#accountKey
    const file = join(this.#o.dir, 'account.key')
    try {
      this.#accountKey = await readFile(file)
      return this.#accountKey
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new AcmeError('EDGE_ERR_ACME_STATE', `cannot read ${file}`, { cause: err })
    }
    const key = await acme.crypto.createPrivateEcdsaKey('P-256')
    try {
      await writeAtomic(file, key, 0o600)
    } catch (err) {
      throw new AcmeError('EDGE_ERR_ACME_WRITE_FAILED', `cannot write ${file}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    this.#log.info({ file }, 'acme account key created')
    this.#accountKey = key
    return key
  }

  async #savedAccountUrl(): Promise<string | undefined> {
    const file = join(this.#o.dir, 'account.json')
    try {
      const j = JSON.parse(await readFile(file, 'utf8')) as { directoryUrl?: unknown; url?: unknown }
      return j.directoryUrl === this.#o.directoryUrl && typeof j.url === 'string' ? j.url : undefined
    } catch {
      return undefined
    }
  }

  async #saveAccount(url: string): Promise<void> {
    const file = join(this.#o.dir, 'account.json')
    const data = `${JSON.stringify({ directoryUrl: this.#o.directoryUrl, url, email: this.#o.email }, null, 2)}\n`
    const old = await readFile(file, 'utf8').catch(() => '')
    if (old === data) return
    try {
      await writeAtomic(file, data, 0o600)
    } catch (err) {
      throw new AcmeError('EDGE_ERR_ACME_WRITE_FAILED', `cannot write ${file}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    this.#log.info({ account: url }, 'acme account registered')
  }
}

function accountGone(err: unknown): boolean {
  const m = String((err as Error).message)
  return /account/i.test(m) && /not found|not exist|does not exist|no existing|unknown/i.test(m)
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'EPIPE',
])

function classify(err: unknown, what: string): AcmeError {
  if (isAcmeError(err)) return err
  const e = err as Error & { code?: string }
  if (e.code !== undefined && (NETWORK_CODES.has(e.code) || /CERT|SSL|TLS/.test(e.code))) {
    return new AcmeError('EDGE_ERR_ACME_UNREACHABLE', `${what}: ${e.code} ${e.message}`, { cause: err })
  }
  if (/challenge|authorization/i.test(e.message ?? '')) {
    return new AcmeError('EDGE_ERR_ACME_CHALLENGE_FAILED', `${what}: ${e.message}`, { cause: err })
  }
  return new AcmeError('EDGE_ERR_ACME_REFUSED', `${what}: ${e.message ?? String(err)}`, { cause: err })
}

/**
 * acme-client's HTTP client is one module-wide axios instance: the extra CA
 * goes on it (one ACME CA per agent), and its own retries are cut to one
 * because the agent has its own backoff (never two layers of retries).
 */
function configureHttp(timeoutMs: number, caPem: string | undefined): void {
  const ax = acme.axios
  ax.defaults.timeout = timeoutMs
  ax.defaults.httpsAgent = new HttpsAgent({ keepAlive: false, ...(caPem === undefined ? {} : { ca: caPem }) })
  const settings = (ax.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings
  settings['retryMaxAttempts'] = 1
  settings['retryDefaultDelay'] = 1
}
