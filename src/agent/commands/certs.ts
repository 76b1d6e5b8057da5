// `edge-agent certs init|import-ca|issue|sign|list|revoke|crl|ca|trust-clock|renew-gateway`:
// the local issuing CA, run as the service user on the gateway. These work on
// the state directory directly, with or without a running agent; a running
// agent picks up revocations (and a trusted clock) from there at once.
import { existsSync, readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { mkdir, writeFile, chmod } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Command, Option } from 'commander'
import {
  CertsError,
  ClockGuard,
  LocalCa,
  REVOCATION_REASONS,
  deviceIdProblem,
  generateKeyPair,
  parseCsr,
  systemClock,
  writeAtomic,
  type IssuedRecord,
} from '../../certs/index.js'
import type { AgentConfig } from '../config/schema.js'
import { ExitCode } from '../exit-codes.js'
import { table } from '../status-view.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'
import { gatewayRow, renderGateway, renewGateway } from './certs-gateway.js'

type Flags = ConfigFlags

export function certsCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const certs = new Command('certs').description('the local issuing CA: device certificates, revocation, CRL')
  certs.addHelpText(
    'after',
    `\nThe CA lives in <dataDir>/certs (0700, keys 0600). Run these as the service user:\n  $ sudo -u edge-agent edge-agent certs list\nSee docs/certificates.md.`,
  )

  withConfigOptions(
    certs
      .command('init')
      .description('create the local CA: an EC P-256 key and a self-signed root (or, with --csr, a CSR for your PKI)')
      .option('--name <cn>', 'CA common name (default certs.caName, else "edge-agent local CA (<site>)")')
      .option('--lifetime <duration>', 'CA lifetime, e.g. 5y, 365d (default certs.caLifetimeSec)')
      .option(
        '--csr <file>',
        'do not self-sign: keep the key here and write a CSR for the site/enterprise CA to sign as an intermediate',
      )
      .option('-f, --force', 'replace an existing CA (every device certificate it issued stops working)', false)
      .addHelpText(
        'after',
        `\nExamples:\n  $ edge-agent certs init\n  $ edge-agent certs init --csr gateway-ca.csr     # then: certs import-ca --cert gateway-ca.crt --chain site-chain.pem\n${CONFIG_HELP}`,
      ),
  ).action((o: Flags & { name?: string; lifetime?: string; csr?: string; force: boolean }) => done(init(ctx, o)))

  withConfigOptions(
    certs
      .command('import-ca')
      .description('install a CA certificate signed by the site or enterprise PKI (an intermediate), with its issuers')
      .requiredOption('--cert <file>', 'the CA certificate (PEM; may be followed by its issuers)')
      .option('--key <file>', 'its private key (PEM); default the key kept by `certs init --csr`')
      .option('--chain <file>', 'issuers above it up to a root (PEM bundle), nearest first')
      .option('-f, --force', 'replace an existing CA', false)
      .addHelpText('after', '\nExamples:\n  $ edge-agent certs import-ca --cert gateway-ca.crt --chain site-chain.pem'),
  ).action((o: Flags & { cert: string; key?: string; chain?: string; force: boolean }) => done(importCa(ctx, o)))

  withConfigOptions(
    certs
      .command('issue')
      .description('issue a device key and certificate for factory provisioning: DIR/ID.key, DIR/ID.crt, DIR/ca.crt')
      .argument('<device-id>', 'the device id: certificate CN, MQTT client id, topic space')
      .requiredOption('-o, --out <dir>', 'directory to write the files into')
      .option(
        '--lifetime <duration>',
        'e.g. 30d, 12h (default certs.device.lifetimeSec; at most certs.device.maxLifetimeSec)',
      )
      .option('-f, --force', 'overwrite existing files', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent certs issue press-7 --out /srv/provisioning\n  $ edge-agent certs issue press-7 --out . --lifetime 90d   # shelf time before installation',
      ),
  ).action((id: string, o: Flags & { out: string; lifetime?: string; force: boolean }) => done(issue(ctx, id, o)))

  withConfigOptions(
    certs
      .command('sign')
      .description('sign a device CSR (PEM or DER); the device id is the CSR CN')
      .argument('<csr-file>', 'the certificate request')
      .option('-o, --out <file>', 'write the certificate here instead of stdout')
      .option('--id <device-id>', 'device id to certify, when the CSR has no CN (must equal it otherwise)')
      .option('--lifetime <duration>', 'e.g. 30d (default certs.device.lifetimeSec)')
      .option('--chain', 'append the CA certificate and its issuers', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout d.key -subj /CN=press-7 -out d.csr\n  $ edge-agent certs sign d.csr --out d.crt',
      ),
  ).action((file: string, o: Flags & { out?: string; id?: string; lifetime?: string; chain: boolean }) =>
    done(sign(ctx, file, o)),
  )

  withConfigOptions(
    certs
      .command('list')
      .description('list issued certificates with their expiry (the newest per device unless --all)')
      .option('--all', 'every certificate on record, expired and superseded ones too', false)
      .option('--json', 'print JSON', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent certs list\n  $ edge-agent certs list --all --json | jq \'.[] | select(.status == "expired")\'',
      ),
  ).action((o: Flags & { all: boolean; json: boolean }) => done(list(ctx, o)))

  withConfigOptions(
    certs
      .command('revoke')
      .description(
        "revoke a device's certificates: a running agent closes its connection and refuses new handshakes at once",
      )
      .argument('[device-id]', 'revoke every unexpired certificate of this device')
      .option('--serial <hex>', 'revoke this one certificate instead')
      .addOption(new Option('--reason <reason>', 'CRL reason').choices([...REVOCATION_REASONS]).default('unspecified'))
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent certs revoke press-7\n  $ edge-agent certs revoke --serial 5A1F... --reason keyCompromise',
      ),
  ).action((id: string | undefined, o: Flags & { serial?: string; reason: string }) => done(revoke(ctx, id, o)))

  withConfigOptions(
    certs
      .command('crl')
      .description('print the current CRL (PEM), or write it as DER')
      .option('-o, --out <file>', 'write to this file')
      .option('--der', 'DER instead of PEM', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent certs crl | openssl crl -noout -text\n  $ edge-agent certs crl --der --out /srv/www/crl.der',
      ),
  ).action((o: Flags & { out?: string; der: boolean }) => done(crl(ctx, o)))

  withConfigOptions(
    certs
      .command('ca')
      .description('print the CA certificate and its issuers (what devices trust)')
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent certs ca > ca.crt\n  $ edge-agent certs ca | openssl x509 -noout -subject -enddate',
      ),
  ).action((o: Flags) => done(caBundle(ctx, o)))

  withConfigOptions(
    certs
      .command('renew-gateway')
      .description(
        "renew the gateway's own ACME certificate now (certs.acme), through the running agent's admin endpoint",
      )
      .option('--url <url>', 'admin endpoint (default: from the config)')
      .option('--json', 'print JSON', false)
      .addHelpText(
        'after',
        '\nWaits for the order; a certificate an upstream refuses is not promoted (the current one stays).\n' +
          '\nExamples:\n  $ edge-agent certs renew-gateway\n  $ edge-agent certs renew-gateway --json | jq .promoted',
      ),
  ).action((o: Flags & { url?: string; json: boolean }) => done(renewGateway(ctx, o)))

  withConfigOptions(
    certs
      .command('trust-clock')
      .description('accept the current system time after a suspicious clock jump (issuance resumes)')
      .addHelpText(
        'after',
        '\nCheck the time first (date -u; timedatectl). A running agent picks this up within seconds.\n\nExamples:\n  $ timedatectl && sudo -u edge-agent edge-agent certs trust-clock',
      ),
  ).action((o: Flags) => done(trustClock(ctx, o)))

  return certs
}

interface Setup {
  readonly config: Readonly<AgentConfig>
  readonly dir: string
  readonly guard: ClockGuard
}

async function setup(ctx: CommandContext, o: Flags): Promise<Setup | number> {
  const loaded = loadOrReport(ctx, o)
  if (typeof loaded === 'number') return loaded
  const dir = join(loaded.config.dataDir, 'certs')
  await LocalCa.prepareDir(dir)
  const c = loaded.config.certs.clock
  const guard = new ClockGuard({
    clock: systemClock,
    file: join(dir, 'clock.json'),
    toleranceMs: c.toleranceSec * 1000,
    maxForwardJumpMs: c.maxForwardJumpSec * 1000,
  })
  await guard.load()
  return { config: loaded.config, dir, guard }
}

async function openCa(s: Setup): Promise<LocalCa> {
  const c = s.config.certs
  const ca = new LocalCa({
    dir: s.dir,
    guard: s.guard,
    backdateMs: c.backdateSec * 1000,
    crlValidityMs: c.crl.validitySec * 1000,
    maxIdBytes: s.config.devices.maxIdBytes,
  })
  await ca.load()
  return ca
}

/** Runs a command body; CertsError becomes a one-line message and exit 1. */
async function guarded(ctx: CommandContext, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof CertsError) {
      ctx.err(`edge-agent: ${err.message} (${err.code})\n`)
      return ExitCode.FAILURE
    }
    throw err
  }
}

export async function init(
  ctx: CommandContext,
  o: Flags & { name?: string; lifetime?: string; csr?: string; force: boolean },
): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  return guarded(ctx, async () => {
    const c = s.config.certs
    const name = o.name ?? (c.caName !== '' ? c.caName : `edge-agent local CA (${s.config.site.name})`)
    if (o.csr !== undefined) {
      const csr = await LocalCa.createCsr(s.dir, { name })
      await writeFile(resolve(ctx.cwd, o.csr), csr)
      ctx.err(
        `wrote ${o.csr}: have your site or enterprise CA sign it as a CA certificate (CA:TRUE, pathlen 0, keyCertSign, cRLSign), then:\n` +
          `  edge-agent certs import-ca --cert <signed.crt> --chain <issuers.pem>\nThe key stays in ${s.dir}.\n`,
      )
      return ExitCode.OK
    }
    const lifetimeMs = o.lifetime === undefined ? c.caLifetimeSec * 1000 : parseDuration(o.lifetime)
    if (typeof lifetimeMs === 'string') return usage(ctx, lifetimeMs)
    const status = s.guard.assess()
    if (status.state !== 'ok')
      throw new CertsError(
        'EDGE_ERR_CERT_CLOCK_SUSPICIOUS',
        `clock is suspicious (${status.reason ?? ''}); fix the time or run \`edge-agent certs trust-clock\``,
      )
    const { certPem } = await LocalCa.init(s.dir, { name, lifetimeMs, now: Date.now(), force: o.force })
    await s.guard.commit()
    const ca = await openCa(s)
    await ca.writeCrl()
    const x = new X509Certificate(certPem)
    ctx.out(
      `created local CA "${name}"\n  certificate  ${join(s.dir, 'ca.crt')}\n  expires      ${new Date(x.validTo).toISOString()}\n  sha256       ${x.fingerprint256}\n`,
    )
    return ExitCode.OK
  })
}

async function importCa(
  ctx: CommandContext,
  o: Flags & { cert: string; key?: string; chain?: string; force: boolean },
): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  return guarded(ctx, async () => {
    const read = (f: string) => readFileSync(resolve(ctx.cwd, f), 'utf8')
    const { certPem } = await LocalCa.importCa(s.dir, {
      certPem: read(o.cert),
      ...(o.key === undefined ? {} : { keyPem: read(o.key) }),
      ...(o.chain === undefined ? {} : { chainPem: read(o.chain) }),
      force: o.force,
      now: s.guard.trustedNow(),
    })
    const ca = await openCa(s)
    await ca.writeCrl()
    const x = new X509Certificate(certPem)
    ctx.out(
      `imported CA ${x.subject.replace(/\n/g, ', ')}\n  issued by   ${x.issuer.replace(/\n/g, ', ')}\n  expires     ${new Date(x.validTo).toISOString()}\n`,
    )
    if (o.key !== undefined) ctx.err(`the CA key is now in ${join(s.dir, 'ca.key')} (0600): delete ${o.key}\n`)
    return ExitCode.OK
  })
}

export async function issue(
  ctx: CommandContext,
  id: string,
  o: Flags & { out: string; lifetime?: string; force: boolean },
): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  const problem = deviceIdProblem(id, s.config.devices.maxIdBytes)
  if (problem !== undefined) return usage(ctx, `device id ${JSON.stringify(id)} ${problem}`)
  const lifetimeMs = lifetimeFor(s.config, o.lifetime)
  if (typeof lifetimeMs === 'string') return usage(ctx, lifetimeMs)
  const dir = resolve(ctx.cwd, o.out)
  const files = { key: join(dir, `${id}.key`), crt: join(dir, `${id}.crt`), ca: join(dir, 'ca.crt') }
  if (!o.force && (existsSync(files.key) || existsSync(files.crt))) {
    ctx.err(`edge-agent: ${files.key} or ${files.crt} exists; use --force to overwrite\n`)
    return ExitCode.FAILURE
  }
  return guarded(ctx, async () => {
    const ca = await openCa(s)
    const key = await generateKeyPair()
    const cert = await ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs })
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await writeAtomic(files.key, key.privateKeyPem, 0o600)
    await writeAtomic(files.crt, cert.certPem, 0o644)
    await writeAtomic(files.ca, ca.bundlePem(), 0o644)
    ctx.out(
      `issued ${id}\n  key          ${files.key}\n  certificate  ${files.crt}\n  CA bundle    ${files.ca}\n  serial       ${cert.serial}\n  expires      ${new Date(cert.notAfter).toISOString()}\n`,
    )
    return ExitCode.OK
  })
}

async function sign(
  ctx: CommandContext,
  file: string,
  o: Flags & { out?: string; id?: string; lifetime?: string; chain: boolean },
): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  const lifetimeMs = lifetimeFor(s.config, o.lifetime)
  if (typeof lifetimeMs === 'string') return usage(ctx, lifetimeMs)
  return guarded(ctx, async () => {
    const raw = readFileSync(resolve(ctx.cwd, file))
    const csr = await parseCsr(raw.includes('-----BEGIN') ? raw.toString('utf8') : raw)
    const id = o.id ?? csr.cn
    if (id === '') return usage(ctx, 'the CSR has no CN: give the device id with --id')
    if (csr.cn !== '' && csr.cn !== id) return usage(ctx, `the CSR names CN=${csr.cn}, not ${id}`)
    const problem = deviceIdProblem(id, s.config.devices.maxIdBytes)
    if (problem !== undefined) return usage(ctx, `device id ${JSON.stringify(id)} ${problem}`)
    const ca = await openCa(s)
    const cert = await ca.issue({ id, profile: 'client', publicKey: csr.csr.publicKey, lifetimeMs })
    const pem = cert.certPem + (o.chain ? ca.bundlePem() : '')
    if (o.out === undefined) ctx.out(pem)
    else {
      await writeFile(resolve(ctx.cwd, o.out), pem)
      ctx.err(`issued ${id} (serial ${cert.serial}, expires ${new Date(cert.notAfter).toISOString()}) → ${o.out}\n`)
    }
    return ExitCode.OK
  })
}

export interface CertRow {
  readonly id: string
  readonly profile: 'server' | 'device'
  readonly serial: string
  readonly notBefore: string
  readonly notAfter: string
  readonly status: 'revoked' | 'expired' | 'valid'
  readonly expiresInSec: number
}

/** The issued certificates (newest valid per device unless all), or an exit code after printing why not. */
export async function certRows(ctx: CommandContext, o: Flags & { all: boolean }): Promise<CertRow[] | number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  let rows: CertRow[] = []
  const code = await guarded(ctx, async () => {
    rows = await rowsOf(s, o.all)
    return ExitCode.OK
  })
  return code === ExitCode.OK ? rows : code
}

async function rowsOf(s: Setup, all: boolean): Promise<CertRow[]> {
  // An agent with only an ACME certificate may have no local CA.
  const ca = await openCa(s).catch((err: unknown) => {
    if (s.config.certs.acme !== undefined && err instanceof CertsError && err.code === 'EDGE_ERR_CERT_CA_MISSING')
      return undefined
    throw err
  })
  const now = s.guard.trustedNow()
  let records: IssuedRecord[] = ca?.list() ?? []
  if (!all) {
    const newest = new Map<string, IssuedRecord>()
    for (const r of records) {
      if (r.notAfter <= now) continue
      const key = `${r.profile}:${r.id}`
      const prev = newest.get(key)
      if (prev === undefined || r.notBefore > prev.notBefore) newest.set(key, r)
    }
    records = [...newest.values()]
  }
  return records.map((r) => ({
    id: r.id,
    profile: r.profile === 'server' ? 'server' : 'device',
    serial: r.serial,
    notBefore: new Date(r.notBefore).toISOString(),
    notAfter: new Date(r.notAfter).toISOString(),
    status: ca?.isRevoked(r.serial) === true ? 'revoked' : r.notAfter <= now ? 'expired' : 'valid',
    expiresInSec: Math.round((r.notAfter - now) / 1000),
  }))
}

async function list(ctx: CommandContext, o: Flags & { all: boolean; json: boolean }): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  return guarded(ctx, async () => {
    const gateway = await gatewayRow(s.config, s.guard.trustedNow())
    const rows = await rowsOf(s, o.all)
    if (o.json) {
      ctx.out(JSON.stringify(gateway === undefined ? rows : [gateway, ...rows], null, 2) + '\n')
      return ExitCode.OK
    }
    if (rows.length === 0) ctx.out(gateway === undefined ? 'no certificates\n' : 'no device certificates\n')
    else {
      ctx.out(
        table(
          ['ID', 'KIND', 'STATUS', 'EXPIRES', 'IN', 'SERIAL'],
          rows.map((r) => [
            r.id,
            r.profile,
            r.status,
            r.notAfter,
            r.status === 'valid' ? human(r.expiresInSec) : '-',
            r.serial,
          ]),
        ) + '\n',
      )
    }
    if (gateway !== undefined) ctx.out(renderGateway(gateway, human))
    return ExitCode.OK
  })
}

export async function revoke(
  ctx: CommandContext,
  id: string | undefined,
  o: Flags & { serial?: string; reason: string },
): Promise<number> {
  if (id === undefined && o.serial === undefined) return usage(ctx, 'give a device id or --serial')
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  return guarded(ctx, async () => {
    const ca = await openCa(s)
    const target = o.serial !== undefined ? { serial: o.serial } : id !== undefined ? { id } : {}
    const revoked = await ca.revoke({ ...target, reason: o.reason })
    if (revoked.length === 0) {
      ctx.out('already revoked\n')
      return ExitCode.OK
    }
    for (const r of revoked) ctx.out(`revoked ${r.id} serial ${r.serial}\n`)
    ctx.err(
      `CRL updated: ${ca.paths.crlPem}; a running agent closes the device's connection and publishes the CRL on ${s.config.certs.crl.topic}\n`,
    )
    return ExitCode.OK
  })
}

async function crl(ctx: CommandContext, o: Flags & { out?: string; der: boolean }): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  return guarded(ctx, async () => {
    const ca = await openCa(s)
    const current = existsSync(ca.paths.crlPem) ? undefined : await ca.writeCrl()
    const data = o.der
      ? (current?.der ?? readFileSync(ca.paths.crlDer))
      : (current?.pem ?? readFileSync(ca.paths.crlPem, 'utf8'))
    if (o.out === undefined) {
      if (o.der) return usage(ctx, '--der needs --out')
      ctx.out(String(data))
    } else await writeFile(resolve(ctx.cwd, o.out), data)
    return ExitCode.OK
  })
}

async function caBundle(ctx: CommandContext, o: Flags): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  return guarded(ctx, async () => {
    const ca = await openCa(s)
    ctx.out(ca.bundlePem())
    return ExitCode.OK
  })
}

async function trustClock(ctx: CommandContext, o: Flags): Promise<number> {
  const s = await setup(ctx, o)
  if (typeof s === 'number') return s
  const status = s.guard.trustNow()
  await s.guard.flush()
  // A running agent consumes this marker and trusts its clock too.
  const marker = join(s.dir, 'clock.trust')
  await writeFile(marker, `${new Date(status.wallTime).toISOString()}\n`, { mode: 0o600 })
  await chmod(marker, 0o600)
  ctx.out(`clock trusted at ${new Date(status.wallTime).toISOString()}\n`)
  return ExitCode.OK
}

function lifetimeFor(config: Readonly<AgentConfig>, flag: string | undefined): number | string {
  const c = config.certs
  if (flag === undefined) return c.device.lifetimeSec * 1000
  const ms = parseDuration(flag)
  if (typeof ms === 'string') return ms
  if (ms > c.device.maxLifetimeSec * 1000)
    return `--lifetime ${flag} exceeds certs.device.maxLifetimeSec (${c.device.maxLifetimeSec} s)`
  if (ms < 3_600_000 && !c.allowShortLifetimes)
    return `--lifetime ${flag} is below 1 hour; allowed only with certs.allowShortLifetimes: true`
  return ms
}

/** '90s', '15m', '12h', '7d', '5y' or plain seconds → ms; a message if invalid. */
export function parseDuration(text: string): number | string {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|y)?$/.exec(text.trim())
  if (m === null) return `invalid duration ${JSON.stringify(text)} (use e.g. 90s, 15m, 12h, 7d, 5y)`
  const unit = { s: 1, m: 60, h: 3600, d: 86400, y: 31536000 }[(m[2] ?? 's') as 's']
  const ms = Math.round(Number(m[1]) * unit * 1000)
  return ms > 0 ? ms : `duration ${JSON.stringify(text)} must be positive`
}

function usage(ctx: CommandContext, message: string): number {
  ctx.err(`edge-agent: ${message}\n`)
  return ExitCode.USAGE
}

function human(sec: number): string {
  if (sec >= 86400) return `${Math.floor(sec / 86400)}d ${Math.floor((sec % 86400) / 3600)}h`
  if (sec >= 3600) return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`
  if (sec >= 60) return `${Math.floor(sec / 60)}m ${sec % 60}s`
  return `${sec}s`
}
