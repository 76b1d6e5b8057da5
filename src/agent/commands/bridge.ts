// `edge-agent bridge add|list|remove`: the bridge rules of the site config,
// edited in place (comments kept, validated before writing, atomic).
import { Command, Option } from 'commander'
import type { Document, YAMLMap } from 'yaml'
import { ExitCode } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import { fileToEdit, runEdit, seqAt, mapItems, EditRefused } from './edit-support.js'
import type { CommandContext } from './context.js'

interface AddFlags extends ConfigFlags {
  upstream: string
  url?: string
  topic: string
  direction: 'out' | 'in' | 'both'
  qos?: string
  localPrefix?: string
  remotePrefix?: string
  name?: string
}

interface RemoveFlags extends ConfigFlags {
  upstream: string
  topic?: string
  direction?: string
  all: boolean
}

export function bridgeCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const bridge = new Command('bridge').description('bridge rules: which topics go to (or come from) which upstream')
  bridge.addHelpText(
    'after',
    '\nEdits keep the comments of the file and are checked before writing. Apply them with `edge-agent reload`.',
  )
  withConfigOptions(
    bridge
      .command('add')
      .description('add a rule to an upstream (the upstream is created when --url is given and it does not exist)')
      .requiredOption('-u, --upstream <name>', 'upstream name')
      .option('--url <url>', 'upstream broker URL, to create the upstream (mqtt://, mqtts://, ws://, wss://)')
      .requiredOption('-t, --topic <filter>', 'MQTT topic filter, relative to the prefixes')
      .addOption(
        new Option('-d, --direction <dir>', 'out = to the upstream, in = from it')
          .choices(['out', 'in', 'both'])
          .makeOptionMandatory(),
      )
      .addOption(new Option('-q, --qos <n>', 'QoS at most (default 1)').choices(['0', '1', '2']))
      .option('--local-prefix <prefix>', "prefix on the local side (empty or ending in '/')")
      .option('--remote-prefix <prefix>', "prefix on the upstream side (empty or ending in '/')")
      .option('--name <id>', 'rule id in logs and drop counters')
      .addHelpText(
        'after',
        `\nExamples:\n  $ edge-agent bridge add --upstream up --url mqtt://10.0.3.10:1883 --topic 'devices/+/telemetry' --direction out\n  $ edge-agent bridge add -u up -t 'devices/+/cmd' -d in --remote-prefix site-a/\n  $ edge-agent reload\n${CONFIG_HELP}`,
      ),
  ).action((o: AddFlags) => done(add(ctx, o)))
  withConfigOptions(
    bridge
      .command('list')
      .description('list upstreams and their rules')
      .option('--json', 'print JSON', false)
      .addHelpText(
        'after',
        "\nExamples:\n  $ edge-agent bridge list\n  $ edge-agent bridge list --json | jq '.upstreams[].rules'",
      ),
  ).action((o: ConfigFlags & { json: boolean }) => done(list(ctx, o)))
  withConfigOptions(
    bridge
      .command('remove')
      .description(
        'remove the rules of an upstream matching --topic (and --direction), or the whole upstream with --all',
      )
      .requiredOption('-u, --upstream <name>', 'upstream name')
      .option('-t, --topic <filter>', 'remove the rules with this topic filter')
      .addOption(new Option('-d, --direction <dir>', 'only rules of this direction').choices(['out', 'in', 'both']))
      .option('--all', 'remove the upstream itself (its buffered messages stay in the buffer)', false)
      .addHelpText(
        'after',
        "\nExamples:\n  $ edge-agent bridge remove --upstream up --topic 'devices/+/telemetry'\n  $ edge-agent bridge remove --upstream old --all",
      ),
  ).action((o: RemoveFlags) => done(remove(ctx, o)))
  return bridge
}

function findUpstream(doc: Document, name: string): { map: YAMLMap; index: number } | undefined {
  return mapItems(seqAt(doc, ['upstreams'])).find((u) => u.map.get('name') === name)
}

async function add(ctx: CommandContext, o: AddFlags): Promise<number> {
  const file = fileToEdit(ctx, o.config)
  if (file === undefined) return ExitCode.CONFIG
  const rule: Record<string, unknown> = { topic: o.topic, direction: o.direction }
  if (o.qos !== undefined) rule['qos'] = Number(o.qos)
  if (o.localPrefix !== undefined) rule['localPrefix'] = o.localPrefix
  if (o.remotePrefix !== undefined) rule['remotePrefix'] = o.remotePrefix
  if (o.name !== undefined) rule['name'] = o.name
  let created = false
  const { code, result } = runEdit(ctx, file, (doc) => {
    const found = findUpstream(doc, o.upstream)
    if (found === undefined) {
      if (o.url === undefined) {
        const names = mapItems(seqAt(doc, ['upstreams'])).map((u) => String(u.map.get('name')))
        throw new EditRefused(
          `no upstream '${o.upstream}' (have: ${names.join(', ') || 'none'}); pass --url to create it`,
        )
      }
      seqAt(doc, ['upstreams']).add(doc.createNode({ name: o.upstream, url: o.url, rules: [rule] }))
      created = true
      return
    }
    if (o.url !== undefined && found.map.get('url') !== o.url) {
      throw new EditRefused(
        `upstream '${o.upstream}' exists with another url (${String(found.map.get('url'))}); leave out --url to add a rule to it`,
      )
    }
    const rules = seqAt(doc, ['upstreams', found.index, 'rules'])
    const same = mapItems(rules).find((r) => r.map.get('topic') === o.topic && r.map.get('direction') === o.direction)
    if (same !== undefined)
      throw new EditRefused(
        `upstream '${o.upstream}' already has a ${o.direction} rule for '${o.topic}' (rules[${same.index}])`,
      )
    rules.add(doc.createNode(rule))
  })
  if (code !== ExitCode.OK || result === undefined) return code
  ctx.out(
    `${created ? `added upstream ${o.upstream} (${o.url ?? ''}) with` : `added to upstream ${o.upstream}:`} rule ${o.direction} '${o.topic}'\napply it: edge-agent reload\n`,
  )
  return ExitCode.OK
}

async function list(ctx: CommandContext, o: ConfigFlags & { json: boolean }): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: true })
  if (typeof loaded === 'number') return loaded
  const upstreams = loaded.config.upstreams.map((u) => ({
    name: u.name,
    url: redactUrl(u.url),
    rules: u.rules.map((r, i) => ({
      index: i,
      topic: r.topic,
      direction: r.direction,
      qos: r.qos,
      localPrefix: r.localPrefix,
      remotePrefix: r.remotePrefix,
      ...(r.name === undefined ? {} : { name: r.name }),
    })),
  }))
  if (o.json) {
    ctx.out(JSON.stringify({ config: loaded.location, upstreams }, null, 2) + '\n')
    return ExitCode.OK
  }
  if (upstreams.length === 0)
    ctx.out('no upstreams (add one: edge-agent bridge add --upstream NAME --url URL --topic FILTER --direction out)\n')
  for (const u of upstreams) {
    ctx.out(`${u.name}  ${u.url}\n`)
    if (u.rules.length === 0) ctx.out('  (no rules)\n')
    for (const r of u.rules) {
      const map = r.localPrefix || r.remotePrefix ? `  local '${r.localPrefix}' <-> remote '${r.remotePrefix}'` : ''
      ctx.out(`  [${r.index}] ${r.direction.padEnd(4)} qos ${r.qos}  ${r.topic}${map}\n`)
    }
  }
  return ExitCode.OK
}

async function remove(ctx: CommandContext, o: RemoveFlags): Promise<number> {
  if (!o.all && o.topic === undefined) {
    ctx.err('edge-agent: bridge remove needs --topic FILTER (remove rules) or --all (remove the upstream)\n')
    return ExitCode.USAGE
  }
  const file = fileToEdit(ctx, o.config)
  if (file === undefined) return ExitCode.CONFIG
  let removed = 0
  const { code } = runEdit(ctx, file, (doc) => {
    const found = findUpstream(doc, o.upstream)
    if (found === undefined) throw new EditRefused(`no upstream '${o.upstream}'`)
    if (o.all) {
      seqAt(doc, ['upstreams']).delete(found.index)
      removed = 1
      return
    }
    if (found.map.get('rules', true) === undefined) throw new EditRefused(`upstream '${o.upstream}' has no rules`)
    const rules = seqAt(doc, ['upstreams', found.index, 'rules'])
    const doomed = mapItems(rules).filter(
      (r) => r.map.get('topic') === o.topic && (o.direction === undefined || r.map.get('direction') === o.direction),
    )
    if (doomed.length === 0)
      throw new EditRefused(
        `upstream '${o.upstream}' has no rule for '${o.topic}'${o.direction ? ` (${o.direction})` : ''}`,
      )
    for (const r of doomed.reverse()) rules.delete(r.index)
    removed = doomed.length
  })
  if (code !== ExitCode.OK) return code
  ctx.out(
    o.all
      ? `removed upstream ${o.upstream} (its buffered messages stay in the buffer)\n`
      : `removed ${removed} rule${removed === 1 ? '' : 's'} from ${o.upstream}\n`,
  )
  ctx.out('apply it: edge-agent reload\n')
  return ExitCode.OK
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return url
  }
}
