// `edge-agent doctor`'s checks: each one looks at one thing an operator meets
// in the first hour (config, data dir, lock, clock, disk, certificates,
// upstream reachability step by step, ports, file modes) and says pass, warn
// or fail with the fix. Read-only: nothing here changes a file or a session.
import { lookup } from 'node:dns/promises'
import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, readdirSync, statSync, statfsSync } from 'node:fs'
import { createServer, connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { dirname, join } from 'node:path'
import type { AgentConfig } from './config/schema.js'

export type CheckStatus = 'pass' | 'warn' | 'fail'

export interface CheckResult {
  readonly check: string
  readonly status: CheckStatus
  readonly detail: string
  /** What to do about it (warn and fail). */
  readonly fix?: string
}

const DAY = 86_400_000

function result(check: string, status: CheckStatus, detail: string, fix?: string): CheckResult {
  return fix === undefined ? { check, status, detail } : { check, status, detail, fix }
}

/** Clock: not before this build was made (a gateway without RTC boots in 1970). */
export function clockCheck(now: number, builtAt: number | undefined): CheckResult {
  if (builtAt !== undefined && now < builtAt - DAY) {
    return result(
      'clock',
      'fail',
      `system time ${new Date(now).toISOString()} is before this build (${new Date(builtAt).toISOString()})`,
      'set the time (timedatectl, NTP); certificates are not valid before it is right',
    )
  }
  return result('clock', 'pass', `system time ${new Date(now).toISOString()}`)
}

/** Free space for the buffer and its WAL, against the buffer's floor. */
export function diskCheck(config: Readonly<AgentConfig>): CheckResult {
  let dir = config.dataDir
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir)
  let free: number
  let total: number
  try {
    const s = statfsSync(dir)
    free = s.bavail * s.bsize
    total = s.blocks * s.bsize
  } catch (err) {
    return result('disk', 'warn', `cannot read free space of ${dir} (${(err as Error).message})`)
  }
  // Same defaults as the store: the smaller of 200 MiB and 5 % of the file system.
  const floor =
    config.buffer.minFreeBytes > 0 ? config.buffer.minFreeBytes : Math.min(200 * 2 ** 20, Math.floor(total * 0.05))
  const text = `${mib(free)} free on ${dir}, floor ${mib(floor)} (buffer.minFreeBytes)`
  if (free <= floor)
    return result(
      'disk',
      'fail',
      text,
      'free disk space, or lower buffer.minFreeBytes: the buffer refuses new messages below the floor',
    )
  if (free <= floor * 2) return result('disk', 'warn', text, 'free disk space: the buffer is close to its floor')
  return result('disk', 'pass', text)
}

function mib(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`
}

/** Expiry of one certificate file: fail when expired or not yet valid, warn within warnDays. */
export function certificateCheck(check: string, file: string, now: number, warnDays = 7): CheckResult {
  let x: X509Certificate
  try {
    x = new X509Certificate(readFileSync(file))
  } catch (err) {
    return result(
      check,
      'fail',
      `cannot read certificate ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      'check the path in the config',
    )
  }
  const notAfter = Date.parse(x.validTo)
  const notBefore = Date.parse(x.validFrom)
  const subject = x.subject.replace(/\n/g, ', ')
  if (now > notAfter) return result(check, 'fail', `${file} (${subject}) expired ${x.validTo}`, 'renew or re-issue it')
  if (now < notBefore)
    return result(check, 'fail', `${file} (${subject}) not valid before ${x.validFrom}`, 'check the clock')
  const days = Math.floor((notAfter - now) / DAY)
  if (days < warnDays)
    return result(check, 'warn', `${file} (${subject}) expires in ${days} days (${x.validTo})`, 'renew it soon')
  return result(check, 'pass', `${file} (${subject}) valid ${days} more days`)
}

/** The local CA, the broker's server certificate and the newest device certificates. */
export function localCertificateChecks(config: Readonly<AgentConfig>, now: number): CheckResult[] {
  const dir = join(config.dataDir, 'certs')
  const out: CheckResult[] = []
  if (!existsSync(join(dir, 'ca.crt'))) return out
  out.push(certificateCheck('certificate: local CA', join(dir, 'ca.crt'), now, 90))
  if (existsSync(join(dir, 'server.crt')))
    out.push(certificateCheck('certificate: broker server', join(dir, 'server.crt'), now, 2))
  // Device certificates are short-lived and renewed by the devices: only
  // expired newest ones matter (a device that stopped renewing).
  const issued = join(dir, 'issued')
  const newest = new Map<string, { file: string; notAfter: number }>()
  for (const f of existsSync(issued) ? readdirSync(issued) : []) {
    if (!f.endsWith('.crt') && !f.endsWith('.pem')) continue
    try {
      const x = new X509Certificate(readFileSync(join(issued, f)))
      const cn = /CN=([^\n,]+)/.exec(x.subject)?.[1] ?? f
      const notAfter = Date.parse(x.validTo)
      if ((newest.get(cn)?.notAfter ?? -1) < notAfter) newest.set(cn, { file: join(issued, f), notAfter })
    } catch {
      // not a certificate: the CA's own records, skipped
    }
  }
  const expired = [...newest.entries()].filter(([, v]) => v.notAfter < now).map(([id]) => id)
  if (newest.size > 0) {
    out.push(
      expired.length === 0
        ? result('certificates: devices', 'pass', `${newest.size} device certificate(s) valid`)
        : result(
            'certificates: devices',
            'warn',
            `expired, not renewed: ${expired.slice(0, 10).join(', ')}${expired.length > 10 ? ', …' : ''}`,
            'check those devices renew (edge-agent device renew), or remove them (edge-agent device remove ID)',
          ),
    )
  }
  return out
}

/** Key files must be readable by their owner only. */
export function modeChecks(config: Readonly<AgentConfig>, configFile: string | undefined): CheckResult[] {
  const out: CheckResult[] = []
  const keys: string[] = []
  const caKey = join(config.dataDir, 'certs', 'ca.key')
  if (existsSync(caKey)) keys.push(caKey)
  const serverKey = join(config.dataDir, 'certs', 'server.key')
  if (existsSync(serverKey)) keys.push(serverKey)
  for (const l of config.broker.listeners) if (l.keyFile !== undefined) keys.push(l.keyFile)
  for (const u of config.upstreams) {
    if (u.keyFile !== '') keys.push(u.keyFile)
    if (u.passwordFile !== '') keys.push(u.passwordFile)
  }
  const bad: string[] = []
  for (const k of keys) {
    try {
      const mode = statSync(k).mode & 0o777
      if ((mode & 0o077) !== 0) bad.push(`${k} (${mode.toString(8).padStart(4, '0')})`)
    } catch {
      // missing files are reported by the checks that need them
    }
  }
  out.push(
    bad.length === 0
      ? result('file modes: keys', 'pass', `${keys.length} key/secret file(s) readable by their owner only`)
      : result(
          'file modes: keys',
          'fail',
          `readable by group or others: ${bad.join(', ')}`,
          `chmod 600 ${bad.map((b) => b.split(' ')[0]).join(' ')}`,
        ),
  )
  if (existsSync(config.dataDir)) {
    const st = statSync(config.dataDir)
    const mode = st.mode & 0o777
    out.push(
      (mode & 0o077) !== 0
        ? result(
            'file modes: data dir',
            'warn',
            `${config.dataDir} is ${mode.toString(8)} (holds the buffer and private keys)`,
            `chmod 700 ${config.dataDir}`,
          )
        : result('file modes: data dir', 'pass', `${config.dataDir} ${mode.toString(8)}, owner uid ${st.uid}`),
    )
    const foreign = readdirSync(config.dataDir).filter((f) => {
      try {
        return statSync(join(config.dataDir, f)).uid !== st.uid
      } catch {
        return false
      }
    })
    if (foreign.length > 0) {
      out.push(
        result(
          'file ownership: data dir',
          'warn',
          `owned by another user than ${config.dataDir}: ${foreign.join(', ')}`,
          `chown -R <service user> ${config.dataDir} (run CLI commands as the service user: sudo -u edge-agent …)`,
        ),
      )
    }
  }
  if (configFile !== undefined && existsSync(configFile) && (statSync(configFile).mode & 0o002) !== 0) {
    out.push(result('file modes: config', 'fail', `${configFile} is writable by anyone`, `chmod o-w ${configFile}`))
  }
  return out
}

/** Each listener and the admin port: free, unless the running agent holds them. */
export async function portChecks(config: Readonly<AgentConfig>, agentRunning: boolean): Promise<CheckResult[]> {
  const ports = [
    ...config.broker.listeners.map((l) => ({ what: `listener ${l.protocol}`, host: l.host, port: l.port })),
    ...(config.admin.enabled ? [{ what: 'admin endpoint', host: config.admin.host, port: config.admin.port }] : []),
  ].filter((p) => p.port !== 0)
  if (agentRunning)
    return [result('ports', 'pass', `held by the running agent: ${ports.map((p) => `${p.host}:${p.port}`).join(', ')}`)]
  const out: CheckResult[] = []
  for (const p of ports) {
    const problem = await bindProblem(p.host, p.port)
    out.push(
      problem === undefined
        ? result(`port ${p.host}:${p.port}`, 'pass', `${p.what}: free`)
        : result(
            `port ${p.host}:${p.port}`,
            'fail',
            `${p.what}: ${problem}`,
            `find the holder: ss -ltnp 'sport = :${p.port}'; stop it or change the port in the config`,
          ),
    )
  }
  return out
}

function bindProblem(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) =>
      resolve(err.code === 'EADDRINUSE' ? 'in use by another process' : `cannot bind (${err.code ?? err.message})`),
    )
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)))
  })
}

/** DNS, TCP, TLS, MQTT CONNACK: stops at the first step that fails and names it. */
export async function upstreamChecks(
  u: Readonly<AgentConfig>['upstreams'][number],
  site: string,
  timeoutMs = 5_000,
): Promise<CheckResult[]> {
  const name = `upstream ${u.name}`
  const url = new URL(u.url)
  const tls = url.protocol === 'mqtts:' || url.protocol === 'wss:'
  const port = Number(
    url.port ||
      (url.protocol === 'mqtt:' ? 1883 : url.protocol === 'mqtts:' ? 8883 : url.protocol === 'ws:' ? 80 : 443),
  )
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const out: CheckResult[] = []
  try {
    const a = await lookup(host)
    out.push(result(`${name}: dns`, 'pass', `${host} -> ${a.address}`))
  } catch (err) {
    out.push(
      result(
        `${name}: dns`,
        'fail',
        `${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? ''})`,
        'check the host name and /etc/resolv.conf, or use an address',
      ),
    )
    return out
  }
  let sock: Socket
  try {
    sock = await withTimeout(
      new Promise<Socket>((resolve, reject) => {
        const s = tcpConnect({ host, port }, () => resolve(s))
        s.once('error', reject)
      }),
      timeoutMs,
    )
    out.push(result(`${name}: tcp`, 'pass', `connected to ${host}:${port}`))
  } catch (err) {
    out.push(
      result(
        `${name}: tcp`,
        'fail',
        `${host}:${port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        'check the broker runs and the firewall between the levels lets this port through',
      ),
    )
    return out
  }
  let stream: Socket = sock
  if (tls) {
    try {
      const read = (f: string): Buffer | undefined => (f === '' ? undefined : readFileSync(f))
      const ca = read(u.caFile)
      const cert = read(u.certFile)
      const key = read(u.keyFile)
      stream = await withTimeout(
        new Promise<Socket>((resolve, reject) => {
          const t = tlsConnect(
            {
              socket: sock,
              servername: u.tlsServerName || host,
              ...(ca ? { ca } : {}),
              ...(cert ? { cert } : {}),
              ...(key ? { key } : {}),
            },
            () => resolve(t),
          )
          t.once('error', reject)
        }),
        timeoutMs,
      )
      out.push(result(`${name}: tls`, 'pass', 'handshake ok, server certificate verified'))
    } catch (err) {
      sock.destroy()
      out.push(
        result(
          `${name}: tls`,
          'fail',
          (err as Error).message,
          'check caFile (the CA that signed the broker), tlsServerName, and the client certificate',
        ),
      )
      return out
    }
  }
  if (url.protocol === 'ws:' || url.protocol === 'wss:') {
    stream.destroy()
    out.push(
      result(`${name}: mqtt`, 'warn', 'not checked over WebSocket', 'watch `edge-agent status` for the upstream state'),
    )
    return out
  }
  try {
    const password =
      u.passwordFile !== ''
        ? readFileSync(u.passwordFile, 'utf8').replace(/[\r\n]+$/, '')
        : url.password !== ''
          ? decodeURIComponent(url.password)
          : undefined
    const username = u.username !== '' ? u.username : url.username !== '' ? decodeURIComponent(url.username) : undefined
    // Its own client id: taking the bridge's would end the running bridge's session.
    const clientId = `edge-agent-doctor.${site}.${process.pid}`
    const code = await withTimeout(connack(stream, clientId, username, password), timeoutMs)
    stream.destroy()
    if (code === 0) out.push(result(`${name}: mqtt`, 'pass', 'CONNACK accepted (MQTT 3.1.1 probe)'))
    else
      out.push(
        result(
          `${name}: mqtt`,
          'fail',
          `CONNACK refused: ${CONNACK[code] ?? `code ${code}`}`,
          'check username, passwordFile and the broker ACL for this gateway',
        ),
      )
  } catch (err) {
    stream.destroy()
    out.push(
      result(`${name}: mqtt`, 'fail', `no CONNACK (${(err as Error).message})`, 'is it an MQTT broker on that port?'),
    )
  }
  return out
}

const CONNACK: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
}

/** An MQTT 3.1.1 CONNECT (clean session), resolving with the CONNACK return code. */
function connack(s: Socket, clientId: string, username?: string, password?: string): Promise<number> {
  const str = (v: string): Buffer => {
    const b = Buffer.from(v)
    return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
  }
  let flags = 0x02
  if (username !== undefined) flags |= 0x80
  if (password !== undefined) flags |= 0x40
  const body = Buffer.concat([
    str('MQTT'),
    Buffer.from([4, flags, 0, 30]),
    str(clientId),
    ...(username !== undefined ? [str(username)] : []),
    ...(password !== undefined ? [str(password)] : []),
  ])
  const len: number[] = []
  let n = body.length
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    len.push(byte)
  } while (n > 0)
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0)
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (got.length >= 4) {
        if (got[0] !== 0x20) reject(new Error(`unexpected packet type 0x${(got[0] ?? 0).toString(16)}`))
        else resolve(got[3] ?? 255)
      }
    })
    s.once('error', reject)
    s.once('close', () => reject(new Error('connection closed')))
    s.write(Buffer.concat([Buffer.from([0x10, ...len]), body]))
  })
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)
    }),
  ])
}

/** Worst first: fail > warn > pass. */
export function worst(results: readonly CheckResult[]): CheckStatus {
  if (results.some((r) => r.status === 'fail')) return 'fail'
  if (results.some((r) => r.status === 'warn')) return 'warn'
  return 'pass'
}
