// `edge-agent device renew`: the reference client of the renewal protocol, so
// that a device integrator can watch it work end to end (docs/certificates.md).
// It runs on the device side: it needs the device's certificate, key and CA
// bundle, and the gateway's mqtts URL; nothing of the gateway's config.
//
// One-shot (default): connect with the current certificate, renew, check the
// new certificate, then install it in two phases (thin-edge): write *.new,
// connect once with the new pair, and only then rename over the old files.
// --watch: stay connected and renew again each time the window opens (with
// jitter), as a device would; the gateway keeps the session on the new
// credential, so the connection is never dropped.
import { readFileSync, existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { X509Certificate } from 'node:crypto'
import { Command } from 'commander'
import type { MqttClient } from 'mqtt'
import {
  CertsError,
  PendingKey,
  RenewalRefusedError,
  completeInstall,
  installCertificate,
  renewOverMqtt,
  type RenewResult,
} from '../../certs/index.js'
import { ExitCode } from '../exit-codes.js'
import { parseDuration } from './certs.js'
import type { CommandContext } from './context.js'
import { addDeviceRegistry } from './device-registry.js'

interface RenewFlags {
  cert: string
  key: string
  ca: string
  url: string
  id?: string
  topicPrefix: string
  keepKey: boolean
  wait: boolean
  watch: boolean
  servername?: string
  timeout: string
}

export function deviceCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const device = new Command('device').description(
    'the devices of this gateway (add, list, remove) and device-side tools (renew)',
  )
  device
    .command('renew')
    .description("renew a device certificate over MQTT from the gateway's local CA (works with the upstream down)")
    .requiredOption('--cert <file>', 'current device certificate (PEM); replaced on success')
    .requiredOption(
      '--key <file>',
      'its private key (PEM); replaced on success unless --keep-key (the new key waits in <file>.pending until then)',
    )
    .requiredOption('--ca <file>', 'CA bundle to trust (PEM): verifies the gateway and the new certificate')
    .requiredOption('--url <url>', 'the gateway, e.g. mqtts://gateway.local:8883')
    .option('--id <device-id>', 'device id (default: the certificate CN)')
    .option('--topic-prefix <template>', 'renewal topic prefix', 'devices/{id}/$certs')
    .option('--keep-key', 'reuse the current key instead of making a new one', false)
    .option('--wait', 'when told to retry later (too early, rate limited, clock), wait and retry', false)
    .option('--watch', 'keep running: renew each time the renewal window opens, on one connection', false)
    .option('--servername <name>', 'name expected in the gateway certificate (default: the URL host)')
    .option('--timeout <duration>', 'how long to wait for each reply', '30s')
    .addHelpText(
      'after',
      '\nExamples:\n  $ edge-agent device renew --cert press-7.crt --key press-7.key --ca ca.crt --url mqtts://gw:8883\n' +
        '  $ edge-agent device renew --cert d.crt --key d.key --ca ca.crt --url mqtts://gw:8883 --watch\n' +
        'Output: one JSON line per renewal ({"status":"renewed",…}), or {"status":"not-due"} (exit 0) while the\n' +
        'certificate is too young to renew, or {"status":"failed","code":…} (exit 1; 69 when the gateway is unreachable).',
    )
    .action((o: RenewFlags) => done(renew(ctx, o)))
  addDeviceRegistry(device, ctx, done)
  return device
}

async function renew(ctx: CommandContext, o: RenewFlags): Promise<number> {
  const files = { cert: resolve(ctx.cwd, o.cert), key: resolve(ctx.cwd, o.key), ca: resolve(ctx.cwd, o.ca) }
  for (const f of Object.values(files)) {
    if (!existsSync(f)) {
      ctx.err(`edge-agent: ${f} not found\n`)
      return ExitCode.USAGE
    }
  }
  const timeoutMs = parseDuration(o.timeout)
  if (typeof timeoutMs === 'string') {
    ctx.err(`edge-agent: ${timeoutMs}\n`)
    return ExitCode.USAGE
  }
  // A power cut between the install's two renames: finish it before reading the pair.
  if (await completeInstall(files)) ctx.err(`edge-agent: finished an interrupted install of ${files.cert}\n`)
  const caPem = readFileSync(files.ca, 'utf8')
  let certPem = readFileSync(files.cert, 'utf8')
  let keyPem = readFileSync(files.key, 'utf8')
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(new X509Certificate(certPem).subject)?.[1] ?? ''
  const id = o.id ?? cn
  if (id === '') {
    ctx.err('edge-agent: the certificate has no CN; give --id\n')
    return ExitCode.USAGE
  }

  let stopping = false
  let wake: (() => void) | undefined
  const onSignal = (): void => {
    stopping = true
    wake?.()
  }
  ctx.onSignal('SIGINT', onSignal)
  ctx.onSignal('SIGTERM', onSignal)
  const sleep = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(r, ms)
      wake = () => {
        clearTimeout(t)
        r()
      }
    })

  let client: MqttClient
  try {
    client = await connect(o, id, certPem, keyPem, caPem)
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    ctx.out(
      `${JSON.stringify({ id, status: 'failed', code: 'EDGE_ERR_CERT_RENEWAL_FAILED', message: `cannot connect to ${o.url}: ${message}` })}\n`,
    )
    ctx.err(`edge-agent: cannot connect to ${o.url} as ${id}: ${message}\n`)
    return ExitCode.UNAVAILABLE
  }
  // A new key waits on disk until its certificate is installed: a run that
  // lost the reply (and a later run, after a restart) asks again for the same
  // key and gets the certificate already issued, not "too-early" (pending-key.ts).
  const pending = o.keepKey ? undefined : new PendingKey(`${files.key}.pending`)
  try {
    for (;;) {
      let result: RenewResult
      try {
        let newKeyPem: string | undefined
        if (pending !== undefined) {
          const t = await pending.take(keyPem)
          if (t.replaced !== undefined) ctx.err(`edge-agent: ${pending.path}: ${t.replaced}; replaced by a new key\n`)
          if (t.source === 'resumed')
            ctx.err(`edge-agent: asking again for the key of an unanswered request (${pending.path})\n`)
          newKeyPem = t.keyPem
        }
        result = await renewOverMqtt({
          client,
          id,
          topicPrefix: o.topicPrefix,
          caPem,
          currentKeyPem: keyPem,
          rotateKey: !o.keepKey,
          ...(newKeyPem === undefined ? {} : { newKeyPem }),
          timeoutMs,
        })
      } catch (err) {
        if (
          err instanceof RenewalRefusedError &&
          (o.wait || o.watch) &&
          err.retryAfterSec !== undefined &&
          ['too-early', 'rate-limited', 'clock-suspicious'].includes(err.error)
        ) {
          ctx.err(`${JSON.stringify({ id, status: 'waiting', error: err.error, retryAfterSec: err.retryAfterSec })}\n`)
          await sleep(err.retryAfterSec * 1000 + Math.random() * 1000)
          if (stopping) return ExitCode.OK
          continue
        }
        if (err instanceof RenewalRefusedError && err.error === 'too-early') {
          // A fresh certificate: nothing to do yet, which is not a failure.
          ctx.out(
            `${JSON.stringify({ id, status: 'not-due', retryAfterSec: err.retryAfterSec ?? null, message: err.message })}\n`,
          )
          return ExitCode.OK
        }
        if (err instanceof CertsError) {
          const detail = err instanceof RenewalRefusedError ? `${err.error}: ${err.message}` : err.message
          ctx.out(
            `${JSON.stringify({ id, status: 'failed', code: err.code, ...(err instanceof RenewalRefusedError ? { error: err.error } : {}), message: err.message })}\n`,
          )
          ctx.err(`edge-agent: renewal failed: ${detail}\n`)
          return ExitCode.FAILURE
        }
        throw err
      }
      if (!o.watch) {
        // Two-phase: the new pair must open a session before it replaces the old one.
        await client.endAsync()
        await installCertificate(files, result, {
          replaceKey: !o.keepKey,
          verify: async () => {
            const probe = await connect(o, id, result.certPem, result.keyPem, caPem)
            await probe.endAsync()
          },
        })
        await pending?.clear()
        ctx.out(`${JSON.stringify(summary(id, result))}\n`)
        return ExitCode.OK
      }
      // --watch: the gateway moved this session onto the new credential.
      await installCertificate(files, result, { replaceKey: !o.keepKey })
      await pending?.clear()
      certPem = result.certPem
      keyPem = result.keyPem
      ctx.out(`${JSON.stringify(summary(id, result))}\n`)
      const lifetime = Date.parse(result.notAfter) - Date.parse(result.notBefore)
      const jitter = Math.random() * (lifetime / 20)
      await sleep(Math.max(1000, Date.parse(result.renewAfter) - Date.now() + jitter))
      if (stopping) return ExitCode.OK
    }
  } finally {
    await client.endAsync(true).catch(() => undefined)
  }
}

function summary(id: string, r: RenewResult): Record<string, unknown> {
  return {
    id,
    status: 'renewed',
    serial: r.serial,
    notBefore: r.notBefore,
    notAfter: r.notAfter,
    renewAfter: r.renewAfter,
    keyRotated: r.keyRotated,
  }
}

async function connect(o: RenewFlags, id: string, cert: string, key: string, ca: string): Promise<MqttClient> {
  // Imported here, not at the top: every command module is loaded at start,
  // and `run` has no use for mqtt.js (its memory: docs/benchmarks.md).
  const { default: mqtt } = await import('mqtt')
  const client = await mqtt.connectAsync(o.url, {
    clientId: id,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: 15_000,
    cert,
    key,
    ca,
    rejectUnauthorized: true,
    ...(o.servername === undefined ? {} : { servername: o.servername }),
  })
  client.on('error', () => undefined)
  return client
}
