// Debian's pebble (a real ACME server) and pebble-challtestsrv (its DNS) on
// loopback for the ACME tests. The HTTPS certificate of pebble is made here
// with openssl; the CA that pebble issues from is read from its management
// interface (/roots/0), and changes at every pebble start.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { request } from 'node:https'
import { join } from 'node:path'
import type { Scope } from './scope.js'
import { tmpDir } from './tmp-dir.js'
import { freePort } from './mosquitto.js'
import { withTimeout } from './wait.js'
import { opensslRoot } from './openssl-ca.js'

export const PEBBLE = '/usr/bin/pebble'
export const CHALLTESTSRV = '/usr/bin/pebble-challtestsrv'

export function pebbleMissing(): string | undefined {
  for (const f of [PEBBLE, CHALLTESTSRV]) if (!existsSync(f)) return `${f} not installed (apt-get install pebble)`
  return undefined
}

export interface PebbleOptions {
  /** Port pebble's validation authority connects to for http-01 (the agent serves it). */
  readonly httpPort: number
  /** Port for tls-alpn-01. */
  readonly tlsPort: number
  readonly eab?: Readonly<Record<string, string>>
  /** Lifetime of the certificates pebble issues, seconds (pebble's certificateValidityPeriod); default ~5 years. */
  readonly validitySec?: number
}

export interface RunningPebble {
  readonly directoryUrl: string
  /** The test CA of pebble's own HTTPS (for certs.acme.caFile). */
  readonly httpsCaFile: string
  /** challtestsrv management (set-txt / clear-txt). */
  readonly challtestsrvUrl: string
  readonly dir: string
  /** pebble's current issuing root (PEM); changes when pebble restarts. */
  root(): Promise<string>
  stop(): Promise<void>
  start(): Promise<void>
  log(): string
  /** PIDs of pebble and pebble-challtestsrv while they run (for a harness's own kill-on-exit). */
  pids(): number[]
}

/** A throwaway CA and a server certificate for 127.0.0.1/localhost, made with openssl. */
export function makeTestTls(
  dir: string,
  name = 'test',
): { caFile: string; certFile: string; keyFile: string; caKeyFile: string } {
  const caKeyFile = join(dir, `${name}-ca.key`)
  const caFile = join(dir, `${name}-ca.pem`)
  const keyFile = join(dir, `${name}-server.key`)
  const certFile = join(dir, `${name}-server.pem`)
  const csr = join(dir, `${name}-server.csr`)
  const ext = join(dir, `${name}-server.ext`)
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' })
  opensslRoot({ keyFile: caKeyFile, certFile: caFile, subject: `/CN=${name} test CA` })
  run([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    csr,
    '-subj',
    '/CN=localhost',
  ])
  writeFileSync(
    ext,
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n',
  )
  run([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    caFile,
    '-CAkey',
    caKeyFile,
    '-CAcreateserial',
    '-out',
    certFile,
    '-days',
    '2',
    '-extfile',
    ext,
  ])
  return { caFile, certFile, keyFile, caKeyFile }
}

export async function startPebble(t: Scope, o: PebbleOptions): Promise<RunningPebble> {
  const missing = pebbleMissing()
  if (missing !== undefined) throw new Error(missing)
  const dir = tmpDir(t, 'edge-agent-pebble-')
  const tls = makeTestTls(dir, 'pebble')
  const [acmePort, mgmtPort, dnsPort, challMgmtPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ]
  const conf = join(dir, 'pebble.json')
  writeFileSync(
    conf,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: tls.certFile,
        privateKey: tls.keyFile,
        httpPort: o.httpPort,
        tlsPort: o.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: o.eab !== undefined,
        ...(o.eab === undefined ? {} : { externalAccountMACKeys: o.eab }),
        ...(o.validitySec === undefined ? {} : { certificateValidityPeriod: Math.max(1, Math.round(o.validitySec)) }),
      },
    }),
  )
  let output = ''
  const procs: { p: ChildProcess; exited: Promise<unknown> }[] = []
  const launch = async (
    cmd: string,
    args: string[],
    env: Record<string, string>,
    ready: RegExp,
    what: string,
  ): Promise<void> => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    const exited = once(p, 'exit')
    procs.push({ p, exited })
    let thisRun = ''
    const up = new Promise<void>((resolve, reject) => {
      const onData = (c: Buffer): void => {
        output += c.toString('utf8')
        thisRun += c.toString('utf8')
        if (ready.test(thisRun)) resolve()
      }
      p.stdout?.on('data', onData)
      p.stderr?.on('data', onData)
      p.once('exit', (code, signal) => reject(new Error(`${what} exited (${code ?? signal}):\n${output.slice(-2000)}`)))
    })
    await withTimeout(up, 20_000, `${what} to start`)
  }
  const kill = async (entry: { p: ChildProcess; exited: Promise<unknown> }): Promise<void> => {
    if (entry.p.exitCode !== null || entry.p.signalCode !== null) return
    entry.p.kill('SIGKILL')
    await withTimeout(entry.exited, 10_000, 'pebble process to exit')
  }
  await launch(
    CHALLTESTSRV,
    [
      '-http01',
      '',
      '-https01',
      '',
      '-tlsalpn01',
      '',
      '-dns01',
      `127.0.0.1:${dnsPort}`,
      '-management',
      `127.0.0.1:${challMgmtPort}`,
      '-defaultIPv6',
      '',
    ],
    {},
    /Starting management server/,
    'pebble-challtestsrv',
  )
  const challtest = procs[0] as { p: ChildProcess; exited: Promise<unknown> }
  let pebbleProc: { p: ChildProcess; exited: Promise<unknown> } | undefined
  const start = async (): Promise<void> => {
    await launch(
      PEBBLE,
      ['-config', conf, '-dnsserver', `127.0.0.1:${dnsPort}`],
      // No random validation delays; no refused nonces (acme-client would
      // retry, but the tests should not depend on it); fresh authorizations
      // at every order so that each renewal exercises the challenge.
      { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      /ACME directory available at/,
      'pebble',
    )
    pebbleProc = procs[procs.length - 1]
  }
  const stop = async (): Promise<void> => {
    if (pebbleProc !== undefined) await kill(pebbleProc)
  }
  t.after(async () => {
    await stop()
    await kill(challtest)
  })
  await start()
  return {
    directoryUrl: `https://127.0.0.1:${acmePort}/dir`,
    httpsCaFile: tls.caFile,
    challtestsrvUrl: `http://127.0.0.1:${challMgmtPort}`,
    dir,
    root: () => httpsGet(`https://127.0.0.1:${mgmtPort}/roots/0`, tls.caFile),
    stop,
    start,
    log: () => output,
    pids: () => procs.filter((e) => e.p.exitCode === null && e.p.signalCode === null).map((e) => e.p.pid as number),
  }
}

function httpsGet(url: string, caFile: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: readFileSync(caFile) }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${url}: HTTP ${res.statusCode}`)),
      )
    })
    req.on('error', reject)
    req.end()
  })
}
