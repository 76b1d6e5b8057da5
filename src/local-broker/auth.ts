// Username/password authentication of the local broker, and per-listener
// policy for clients that bring no credentials.
//
// Decision for a CONNECT (after limits and certificate identity):
// - a certificate-identified session is authenticated by its certificate;
// - a user name with a password file present: the password must verify
//   (CONNACK 4 otherwise); a client address with too many recent failures is
//   refused without running the KDF (CONNACK 5), so a brute force costs the
//   gateway one table lookup per attempt;
// - a user name and no password file: the name is not checked and the client
//   counts as anonymous (what the agent did before it had passwords);
// - anonymous: allowed where the listener's `allowAnonymous` is true, else
//   CONNACK 5.
// Passwords are never logged, not even in part.
//
// The file is re-read when it changes (polled with fs.watchFile: it survives
// the atomic rename `users` and editors do), and can be swapped for another
// path at run time (setPath); a file that does not parse leaves the previous
// one in force, with an error in the log.
import { readFile } from 'node:fs/promises'
import { unwatchFile, watchFile, type Stats } from 'node:fs'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { PasswordFile, PasswordFileError } from './password-file.js'
import type { MqttVersion } from './options.js'

/** Per-listener policy, attached to each accepted connection. */
export interface ListenerPolicy {
  readonly allowAnonymous: boolean
  /** mqtts: the certificate's CN names the client for the ACL; the client id is free. */
  readonly useIdentityAsUsername: boolean
  /** Remote address (no port), for failed-login limits and logs. */
  readonly remoteAddress: string
  /** MQTT versions the listener accepts, and where that is configured (for the refusal's log line). */
  readonly mqttVersions?: readonly MqttVersion[]
  readonly listener?: string
  readonly versionsKey?: string
}

export interface AuthOptions {
  /** The password file; absent means no passwords (see the file header). */
  readonly passwordFile?: string | undefined
  /** Failed logins allowed per client address within `failedLoginWindowMs`. */
  readonly maxFailedLogins: number
  readonly failedLoginWindowMs: number
  /** How often the password file is checked for changes, ms. Default 1000. */
  readonly pollIntervalMs?: number
}

export type AuthResult =
  | { readonly ok: true; readonly username: string | undefined }
  | {
      readonly ok: false
      readonly reason: 'badCredentials' | 'loginRateLimited' | 'anonymousRefused'
      readonly returnCode: 4 | 5
    }

const kPolicy = Symbol('edge-agent.listenerPolicy')
type PolicyConn = Duplex & { [kPolicy]?: ListenerPolicy }

export function setListenerPolicy(conn: Duplex, policy: ListenerPolicy): void {
  ;(conn as PolicyConn)[kPolicy] = policy
}

export function listenerPolicy(conn: Duplex): ListenerPolicy | undefined {
  return (conn as PolicyConn)[kPolicy]
}

/** Addresses tracked at most; the oldest are forgotten first, so a flood of addresses costs bounded memory. */
const MAX_TRACKED_ADDRESSES = 4096

interface Failures {
  windowStart: number
  count: number
}

export class Authenticator {
  readonly #opts: AuthOptions
  readonly #log: Logger
  readonly #now: () => number
  #path: string | undefined
  /** undefined: no password file (absent or not configured). */
  #file: PasswordFile | undefined
  readonly #failures = new Map<string, Failures>()
  #watching: string | undefined
  #reloading: Promise<void> = Promise.resolve()

  constructor(opts: AuthOptions, log: Logger, now: () => number = Date.now) {
    this.#opts = opts
    this.#log = log
    this.#now = now
    this.#path = opts.passwordFile
  }

  /** Users in the password file now; undefined when there is none. */
  get users(): number | undefined {
    return this.#file?.size
  }

  /** Reads the password file; a file that exists and does not parse is an error here (PasswordFileError). */
  async start(): Promise<void> {
    await this.#load(true)
    this.#watch()
  }

  stop(): void {
    if (this.#watching !== undefined) unwatchFile(this.#watching, this.#onChange)
    this.#watching = undefined
  }

  /**
   * Uses another password file (or none) from now on; resolves once it is
   * read, rejects (PasswordFileError) if it does not parse, keeping the
   * previous users in force and watching the new path for a fixed file.
   */
  async setPath(path: string | undefined): Promise<void> {
    const watching = this.#watching !== undefined
    this.stop()
    this.#path = path
    try {
      await this.#load(true)
    } finally {
      if (watching) this.#watch()
    }
  }

  /** Re-reads the password file now (also done on every change). */
  reload(): Promise<void> {
    this.#reloading = this.#reloading.then(() => this.#load())
    return this.#reloading
  }

  async check(
    policy: ListenerPolicy | undefined,
    username: string | undefined,
    password: Buffer | undefined,
  ): Promise<AuthResult> {
    const allowAnonymous = policy?.allowAnonymous ?? true
    const file = this.#file
    if (username === undefined || file === undefined) {
      return allowAnonymous
        ? { ok: true, username: undefined }
        : { ok: false, reason: 'anonymousRefused', returnCode: 5 }
    }
    const address = policy?.remoteAddress ?? '?'
    if (this.#limited(address)) return { ok: false, reason: 'loginRateLimited', returnCode: 5 }
    const ok = await file.verify(username, password ?? Buffer.alloc(0))
    if (ok) return { ok: true, username }
    this.#fail(address)
    return { ok: false, reason: 'badCredentials', returnCode: 4 }
  }

  #limited(address: string): boolean {
    const f = this.#failures.get(address)
    if (f === undefined) return false
    if (this.#now() - f.windowStart >= this.#opts.failedLoginWindowMs) {
      this.#failures.delete(address)
      return false
    }
    return f.count >= this.#opts.maxFailedLogins
  }

  #fail(address: string): void {
    const now = this.#now()
    const f = this.#failures.get(address)
    if (f !== undefined && now - f.windowStart < this.#opts.failedLoginWindowMs) {
      f.count++
      return
    }
    this.#failures.delete(address)
    if (this.#failures.size >= MAX_TRACKED_ADDRESSES) {
      const oldest = this.#failures.keys().next().value
      if (oldest !== undefined) this.#failures.delete(oldest)
    }
    this.#failures.set(address, { windowStart: now, count: 1 })
  }

  readonly #onChange = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size && curr.ino === prev.ino) return
    void this.reload() // #load logs its own failures and never rejects
  }

  #watch(): void {
    if (this.#path === undefined) return
    this.#watching = this.#path
    watchFile(this.#path, { interval: this.#opts.pollIntervalMs ?? 1000, persistent: false }, this.#onChange)
  }

  async #load(strict = false): Promise<void> {
    const path = this.#path
    if (path === undefined) {
      this.#file = undefined
      return
    }
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        if (this.#file !== undefined)
          this.#log.warn({ path }, 'password file removed: user names are no longer checked')
        this.#file = undefined
        return
      }
      if (strict) throw new PasswordFileError(`${path}: ${(err as Error).message}`)
      this.#log.error({ path, err: (err as Error).message }, 'password file unreadable, previous one kept')
      return
    }
    try {
      const file = PasswordFile.parse(text, path)
      this.#file = file
      this.#log.info({ path, users: file.size }, 'password file loaded')
    } catch (err) {
      if (strict) throw err
      this.#log.error({ path, err: (err as Error).message }, 'password file invalid, previous one kept')
    }
  }
}
