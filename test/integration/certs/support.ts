// Helpers for the certs integration tests: device credentials from the real
// CLI, mqtt.js clients with client certificates, OpenSSL.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import type { Scope } from '../../helpers/scope.js'
import { runCli, type RunningAgent } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { withTimeout } from '../../helpers/wait.js'
import { caPaths } from '../../../src/certs/index.js'
import { caSigner, certPem, generateKeyPair, importPrivateKey, newSerial, signLeaf } from '../../../src/certs/x509.js'

export interface DeviceFiles {
  readonly id: string
  readonly key: string
  readonly crt: string
  readonly ca: string
}

/** `edge-agent certs issue ID --out DIR` against the agent's config: the factory path. */
export async function issueWithCli(
  t: Scope,
  agent: RunningAgent,
  id: string,
  args: string[] = [],
): Promise<DeviceFiles> {
  const dir = tmpDir(t, 'edge-agent-device-')
  const r = await runCli(['certs', 'issue', id, '--out', dir, '--config', agent.configFile, ...args])
  if (r.code !== 0) throw new Error(`certs issue ${id} failed (${r.code}): ${r.stderr}`)
  return { id, key: join(dir, `${id}.key`), crt: join(dir, `${id}.crt`), ca: join(dir, 'ca.crt') }
}

/**
 * A certificate signed with the agent's CA key directly, with any dates and
 * CN: for expired or not-yet-valid certificates the CA itself never issues.
 */
export async function forgeWithAgentCa(
  t: Scope,
  agent: RunningAgent,
  cn: string,
  notBefore: number,
  notAfter: number,
): Promise<DeviceFiles> {
  const p = caPaths(agent.certsDir)
  const signer = await caSigner(
    readFileSync(p.caCert, 'utf8'),
    await importPrivateKey(readFileSync(p.caKey, 'utf8')),
    [],
  )
  const key = await generateKeyPair()
  const cert = await signLeaf({
    ca: signer,
    subject: { cn },
    publicKey: key.publicKey,
    serial: newSerial(),
    notBefore,
    notAfter,
    profile: 'client',
  })
  const dir = tmpDir(t, 'edge-agent-forged-')
  const files = { id: cn, key: join(dir, `${cn}.key`), crt: join(dir, `${cn}.crt`), ca: join(dir, 'ca.crt') }
  writeFileSync(files.key, key.privateKeyPem, { mode: 0o600 })
  writeFileSync(files.crt, certPem(cert))
  writeFileSync(files.ca, readFileSync(p.caCert))
  return files
}

export function mqttsUrl(agent: RunningAgent): string {
  if (agent.mqttsPort === undefined) throw new Error('agent has no mqtts listener')
  return `mqtts://127.0.0.1:${agent.mqttsPort}`
}

export function tlsOptions(files: DeviceFiles): IClientOptions {
  return {
    key: readFileSync(files.key),
    cert: readFileSync(files.crt),
    ca: readFileSync(files.ca),
    rejectUnauthorized: true,
  }
}

/** mqtt.js over TLS with the device's certificate (client id = device id unless given). */
export async function deviceClient(
  t: Scope,
  agent: RunningAgent,
  files: DeviceFiles,
  opts: IClientOptions = {},
): Promise<MqttClient> {
  const c = await withTimeout(
    mqtt.connectAsync(mqttsUrl(agent), {
      clientId: files.id,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      ...tlsOptions(files),
      ...opts,
    }),
    10_000,
    `mqtts connect as ${files.id}`,
  )
  c.on('error', () => undefined)
  t.after(() => c.endAsync(true).catch(() => undefined))
  return c
}

/** A connection attempt expected to fail: the error (CONNACK refusal) or a close before CONNACK. */
export async function refused(agent: RunningAgent, opts: IClientOptions): Promise<Error & { code?: number | string }> {
  const c = mqtt.connect(mqttsUrl(agent), { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000, ...opts })
  try {
    return await withTimeout(
      new Promise<Error & { code?: number | string }>((resolve, reject) => {
        c.once('connect', () => reject(new Error('connection was accepted')))
        c.once('error', (err) => resolve(err as Error & { code?: number | string }))
        c.once('close', () => resolve(Object.assign(new Error('closed before CONNACK'), { code: 'closed' })))
      }),
      10_000,
      'the connection to be refused',
    )
  } finally {
    c.end(true)
  }
}

/** Resolves when the client's connection closes. */
export function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()))
}

export async function openssl(
  args: string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn('openssl', args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c))
  proc.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  if (input !== undefined && proc.stdin) {
    // openssl may exit before reading all of it (EPIPE): its exit code tells.
    proc.stdin.on('error', () => undefined)
    proc.stdin.end(input)
  }
  const [code] = (await withTimeout(once(proc, 'close'), 15_000, `openssl ${args.join(' ')}`)) as [number | null]
  return { code, stdout, stderr }
}

/** `openssl verify -CAfile ca cert`; resolves with OpenSSL's output, throws unless it says OK. */
export async function opensslVerify(caFile: string, certFile: string, extra: string[] = []): Promise<string> {
  const r = await openssl(['verify', ...extra, '-CAfile', caFile, certFile])
  if (r.code !== 0 || !r.stdout.includes(': OK')) throw new Error(`openssl verify failed: ${r.stdout}${r.stderr}`)
  return r.stdout
}
