// `edge-agent site init|show`: commission a site from the command line.
// init writes the config (the commented example with the answers set in it),
// creates the state directory and, if asked, the local CA; interactive on a
// terminal (every question has a default and is checked at once), from flags
// otherwise.
import { existsSync, mkdirSync } from 'node:fs'
import { Command } from 'commander'
import { isSeq, type Document } from 'yaml'
import { EXAMPLE_CONFIG } from '../config/example.js'
import { defaultConfigPath, locateConfig } from '../config/locate.js'
import { ExitCode } from '../exit-codes.js'
import { DataDirLock } from '../data-lock.js'
import { withConfigOptions, loadOrReport, type ConfigFlags } from './config-source.js'
import { runEdit } from './edit-support.js'
import type { CommandContext } from './context.js'

interface InitFlags {
  config?: string
  name?: string
  level?: string
  upstreamUrl?: string
  listener: string[]
  dataDir?: string
  ca?: boolean
  force: boolean
  input: boolean
}

interface Listener {
  protocol: 'mqtt' | 'mqtts' | 'ws'
  host: string
  port: number
}

const DEFAULT_DATA_DIR = '/var/lib/edge-agent'
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

export function siteCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const site = new Command('site').description(
    'commission this gateway: write the site config, create the state directory and CA',
  )
  site
    .command('init')
    .description('write a site config (default /etc/edge-agent/config.yaml); asks on a terminal, takes flags otherwise')
    .option('-c, --config <file>', 'config file to write (default /etc/edge-agent/config.yaml)')
    .option('--name <name>', 'site name (letters, digits, . _ -)')
    .option('--level <n>', 'Purdue level of this segment, 0-5')
    .option(
      '--upstream-url <url>',
      'the broker of the level above (mqtt://, mqtts://, ws://, wss://); none if left out',
    )
    .option(
      '--listener <proto:[host:]port>',
      'where devices connect, repeatable (default mqtt:0.0.0.0:1883)',
      collect,
      [],
    )
    .option('--data-dir <dir>', `state directory (default ${DEFAULT_DATA_DIR})`)
    .option('--ca', 'create the local CA now (needed by mqtts listeners)')
    .option('--no-ca', 'do not create the local CA')
    .option('--no-input', 'never ask, even on a terminal (scripts)')
    .option('-f, --force', 'change an existing config file (its other settings and comments are kept)', false)
    .addHelpText(
      'after',
      `\nExamples:\n  $ sudo edge-agent site init                      # asks, with defaults\n` +
        `  $ sudo edge-agent site init --no-input --name press-hall --level 2 \\\n` +
        `      --upstream-url mqtts://10.0.3.10:8883 --listener mqtts:8883 --ca\n` +
        `  $ edge-agent site init --config ./site.yaml --data-dir ./state --no-input\n`,
    )
    .action((o: InitFlags) => done(init(ctx, o)))
  withConfigOptions(
    site
      .command('show')
      .description('summarise the site: which config, data dir, listeners, upstreams, CA, whether an agent runs')
      .option('--json', 'print JSON', false)
      .addHelpText('after', '\nExamples:\n  $ edge-agent site show\n  $ edge-agent site show --json | jq .dataDir'),
  ).action((o: ConfigFlags & { json: boolean }) => done(show(ctx, o)))
  return site
}

function parseListener(text: string): Listener | string {
  const m = /^(mqtt|mqtts|ws):(?:(\[[^\]]+\]|[^:]+):)?(\d{1,5})$/.exec(text.trim())
  if (m === null) return `'${text}' is not proto:[host:]port (e.g. mqtt:1883, mqtts:0.0.0.0:8883)`
  const port = Number(m[3])
  if (port > 65535) return `port ${port} is above 65535`
  return { protocol: m[1] as Listener['protocol'], host: (m[2] ?? '0.0.0.0').replace(/^\[|\]$/g, ''), port }
}

function nameProblem(v: string): string | undefined {
  return NAME.test(v) && v.length <= 64
    ? undefined
    : 'letters, digits, . _ - (64 at most), starting with a letter or digit'
}
function levelProblem(v: string): string | undefined {
  return /^[0-5]$/.test(v) ? undefined : 'a Purdue level 0-5'
}
function urlProblem(v: string): string | undefined {
  if (v === '') return undefined
  try {
    const u = new URL(v)
    if (!/^(mqtt|mqtts|ws|wss):$/.test(u.protocol)) return 'must start with mqtt://, mqtts://, ws:// or wss://'
    if (u.hostname === '') return 'has no host'
    return undefined
  } catch {
    return 'is not a URL (e.g. mqtt://10.0.3.10:1883)'
  }
}
function listenersProblem(v: string): string | undefined {
  for (const part of v.split(/[\s,]+/).filter(Boolean)) {
    const l = parseListener(part)
    if (typeof l === 'string') return l
  }
  return v.trim() === '' ? 'at least one listener' : undefined
}

async function ask(
  ctx: CommandContext,
  question: string,
  fallback: string,
  problem: (v: string) => string | undefined,
): Promise<string> {
  for (let tries = 0; tries < 5; tries++) {
    const v = await ctx.ask(question, fallback)
    const p = problem(v)
    if (p === undefined) return v
    ctx.err(`  ${p}\n`)
  }
  throw new Error(`no valid answer to "${question}"`)
}

async function init(ctx: CommandContext, o: InitFlags): Promise<number> {
  const file =
    o.config !== undefined ? (locateConfig(ctx.env, ctx.cwd, o.config).file ?? '') : defaultConfigPath(ctx.env)
  if (existsSync(file) && !o.force) {
    ctx.err(
      `edge-agent: ${file} exists; use --force to change it (its other settings and comments are kept), or \`edge-agent site show\`\n`,
    )
    return ExitCode.FAILURE
  }
  let answers = {
    name: o.name ?? 'edge-agent',
    level: o.level ?? '2',
    upstreamUrl: o.upstreamUrl ?? '',
    listeners: o.listener.length > 0 ? o.listener.join(' ') : 'mqtt:0.0.0.0:1883',
    dataDir: o.dataDir ?? (ctx.env['STATE_DIRECTORY']?.split(':')[0] || DEFAULT_DATA_DIR),
    ca: o.ca,
  }
  const interactive = o.input && ctx.stdinIsTty
  if (interactive) {
    ctx.err(`Commissioning ${file}. Enter keeps the value in brackets.\n`)
    answers = {
      name: await ask(ctx, 'Site name', answers.name, nameProblem),
      level: await ask(ctx, 'Purdue level of this segment (0-5)', answers.level, levelProblem),
      upstreamUrl: await ask(ctx, 'Upstream broker URL (empty: none yet)', answers.upstreamUrl, urlProblem),
      listeners: await ask(
        ctx,
        'Device listeners (proto:[host:]port, space separated)',
        answers.listeners,
        listenersProblem,
      ),
      dataDir: await ask(ctx, 'State directory', answers.dataDir, (v) =>
        v.startsWith('/') ? undefined : 'an absolute path',
      ),
      ca: answers.ca,
    }
  } else {
    for (const [flag, v, problem] of [
      ['--name', answers.name, nameProblem],
      ['--level', answers.level, levelProblem],
      ['--upstream-url', answers.upstreamUrl, urlProblem],
      ['--listener', answers.listeners, listenersProblem],
    ] as const) {
      const p = problem(v)
      if (p !== undefined) {
        ctx.err(`edge-agent: ${flag} ${JSON.stringify(v)}: ${p}\n`)
        return ExitCode.USAGE
      }
    }
  }
  const listeners = answers.listeners
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((l) => parseListener(l) as Listener)
  const mqtts = listeners.some((l) => l.protocol === 'mqtts')
  let withCa = answers.ca ?? mqtts
  if (interactive && answers.ca === undefined) {
    withCa = /^y/i.test(
      await ask(ctx, 'Create the local CA now (device certificates, mqtts)? (y/n)', mqtts ? 'y' : 'n', (v) =>
        /^(y|n|yes|no)$/i.test(v) ? undefined : 'y or n',
      ),
    )
  }

  mkdirSync(dirOf(file), { recursive: true })
  const { code } = runEdit(
    ctx,
    file,
    (doc: Document) => {
      doc.setIn(['site', 'name'], answers.name)
      doc.setIn(['site', 'level'], Number(answers.level))
      doc.set('dataDir', answers.dataDir)
      const seq = doc.createNode(listeners.map((l) => ({ protocol: l.protocol, host: l.host, port: l.port })))
      if (isSeq(seq)) for (const item of seq.items) (item as { flow?: boolean }).flow = true
      doc.setIn(['broker', 'listeners'], seq)
      if (answers.upstreamUrl !== '' && !hasUpstream(doc, answers.upstreamUrl)) {
        doc.set('upstreams', doc.createNode([{ name: 'upstream', url: answers.upstreamUrl, rules: [] }]))
      }
    },
    EXAMPLE_CONFIG,
  )
  if (code !== ExitCode.OK) return code
  mkdirSync(answers.dataDir, { recursive: true, mode: 0o700 })
  ctx.out(`wrote ${file}\ncreated ${answers.dataDir}\n`)
  if (withCa) {
    const certs = await import('./certs.js')
    const rc = await certs.init(ctx, { config: file, set: [], force: false })
    if (rc !== ExitCode.OK) return rc
  }
  ctx.out(
    `next:\n  edge-agent config validate --config ${file}\n` +
      (answers.upstreamUrl === ''
        ? ''
        : "  edge-agent bridge add --upstream upstream --topic 'devices/+/telemetry' --direction out\n") +
      '  sudo systemctl enable --now edge-agent\n',
  )
  return ExitCode.OK
}

function hasUpstream(doc: Document, url: string): boolean {
  const ups = doc.get('upstreams')
  return isSeq(ups) && ups.items.some((u) => (u as { get?: (k: string) => unknown }).get?.('url') === url)
}

function dirOf(file: string): string {
  return file.slice(0, Math.max(1, file.lastIndexOf('/')))
}

async function show(ctx: CommandContext, o: ConfigFlags & { json: boolean }): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: false })
  if (typeof loaded === 'number') return loaded
  const c = loaded.config
  const lock = existsSync(c.dataDir) ? DataDirLock.isHeld(c.dataDir) : { held: false as const }
  const summary = {
    config: loaded.location,
    site: c.site,
    dataDir: c.dataDir,
    dataDirExists: existsSync(c.dataDir),
    agentRunning: lock.held ? { pid: lock.pid ?? null } : false,
    localCa: existsSync(`${c.dataDir}/certs/ca.crt`),
    listeners: c.broker.listeners.map((l) => ({ protocol: l.protocol, host: l.host, port: l.port })),
    admin: c.admin.enabled ? `${c.admin.host}:${c.admin.port}` : null,
    upstreams: c.upstreams.map((u) => ({
      name: u.name,
      url: u.url.replace(/\/\/[^@/]*@/, '//***@'),
      rules: u.rules.length,
    })),
    deviceGroups: c.devices.groups.map((g) => ({ name: g.name, members: g.members.length })),
  }
  if (o.json) {
    ctx.out(JSON.stringify(summary, null, 2) + '\n')
    return ExitCode.OK
  }
  const lines = [
    `config      ${loaded.file ?? 'built-in defaults'} (${loaded.location.source})`,
    `site        ${c.site.name}, Purdue level ${c.site.level}`,
    `data dir    ${c.dataDir}${summary.dataDirExists ? '' : ' (not created yet)'}`,
    `agent       ${lock.held ? `running (PID ${lock.pid ?? 'unknown'})` : 'not running on this data dir'}`,
    `local CA    ${summary.localCa ? 'present' : 'none (edge-agent certs init)'}`,
    `listeners   ${summary.listeners.map((l) => `${l.protocol}://${l.host}:${l.port}`).join('  ')}`,
    `admin       ${summary.admin ?? 'disabled'}`,
    `upstreams   ${summary.upstreams.length === 0 ? 'none' : summary.upstreams.map((u) => `${u.name} ${u.url} (${u.rules} rules)`).join('\n            ')}`,
    `groups      ${summary.deviceGroups.length === 0 ? 'none' : summary.deviceGroups.map((g) => `${g.name} (${g.members})`).join(', ')}`,
  ]
  ctx.out(lines.join('\n') + '\n')
  return ExitCode.OK
}
