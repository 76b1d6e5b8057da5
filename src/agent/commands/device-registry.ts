// `edge-agent device add|list|remove`: a device as the gateway knows it: its
// certificate from the local CA (its identity) and its device groups in the
// site config (its extra grants). Config edits keep comments, are checked
// before writing and are atomic; a running agent takes new grants with
// `edge-agent reload`, and a revocation at once (the CA's CRL).
import type { Command } from 'commander'
import { ExitCode } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, type ConfigFlags } from './config-source.js'
import { fileToEdit, runEdit, seqAt, mapItems, EditRefused } from './edit-support.js'
import type { CommandContext } from './context.js'

interface AddFlags extends ConfigFlags {
  group: string[]
  out?: string
  lifetime?: string
  force: boolean
}

interface RemoveFlags extends ConfigFlags {
  keepCert: boolean
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

export function addDeviceRegistry(device: Command, ctx: CommandContext, done: (code: Promise<number>) => void): void {
  withConfigOptions(
    device
      .command('add')
      .description('admit a device: issue its key and certificate (--out) and add it to device groups (--group)')
      .argument('<device-id>', 'the device id: certificate CN, MQTT client id, topic space devices/<id>/')
      .option(
        '-g, --group <name>',
        'add it to this devices.groups entry (repeatable; the group must exist)',
        collect,
        [],
      )
      .option('-o, --out <dir>', 'issue a key and certificate into DIR/<id>.key, DIR/<id>.crt, DIR/ca.crt')
      .option('--lifetime <duration>', 'certificate lifetime, e.g. 30d (default certs.device.lifetimeSec)')
      .option('-f, --force', 'overwrite existing key and certificate files', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent device add press-7 --out /srv/provisioning\n  $ edge-agent device add press-7 --group presses && edge-agent reload',
      ),
  ).action((id: string, o: AddFlags) => done(add(ctx, id, o)))
  withConfigOptions(
    device
      .command('list')
      .description('devices with a certificate from the local CA, its expiry and status, and their groups')
      .option('--json', 'print JSON', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent device list\n  $ edge-agent device list --json | jq \'.[] | select(.status != "valid")\'',
      ),
  ).action((o: ConfigFlags & { json: boolean }) => done(list(ctx, o)))
  withConfigOptions(
    device
      .command('remove')
      .description(
        'remove a device: revoke its certificates (a running agent disconnects it at once) and take it out of its groups',
      )
      .argument('<device-id>', 'the device id')
      .option('--keep-cert', 'only take it out of its groups', false)
      .addHelpText('after', '\nExamples:\n  $ edge-agent device remove press-7 && edge-agent reload'),
  ).action((id: string, o: RemoveFlags) => done(remove(ctx, id, o)))
}

async function add(ctx: CommandContext, id: string, o: AddFlags): Promise<number> {
  if (o.out === undefined && o.group.length === 0) {
    ctx.err('edge-agent: device add needs --out DIR (issue its certificate), --group NAME (grant), or both\n')
    return ExitCode.USAGE
  }
  if (o.group.length > 0) {
    const file = fileToEdit(ctx, o.config)
    if (file === undefined) return ExitCode.CONFIG
    const { code } = runEdit(ctx, file, (doc) => {
      const groups = mapItems(seqAt(doc, ['devices', 'groups']))
      for (const name of o.group) {
        const g = groups.find((x) => x.map.get('name') === name)
        if (g === undefined) {
          const have = groups.map((x) => String(x.map.get('name')))
          throw new EditRefused(
            `no device group '${name}' (have: ${have.join(', ') || 'none'}; groups are defined under devices.groups with their grants)`,
          )
        }
        const members = seqAt(doc, ['devices', 'groups', g.index, 'members'])
        if (!members.items.some((m) => String((m as { value?: unknown }).value ?? m) === id))
          members.add(doc.createNode(id))
      }
    })
    if (code !== ExitCode.OK) return code
    ctx.out(`${id} added to ${o.group.join(', ')} (apply: edge-agent reload)\n`)
  }
  if (o.out !== undefined) {
    const certs = await import('./certs.js')
    return certs.issue(ctx, id, {
      ...(o.config === undefined ? {} : { config: o.config }),
      set: o.set,
      out: o.out,
      ...(o.lifetime === undefined ? {} : { lifetime: o.lifetime }),
      force: o.force,
    })
  }
  return ExitCode.OK
}

async function list(ctx: CommandContext, o: ConfigFlags & { json: boolean }): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: true })
  if (typeof loaded === 'number') return loaded
  const certs = await import('./certs.js')
  const rows = await certs.certRows(ctx, { ...o, all: false })
  if (typeof rows === 'number') return rows
  const groupsOf = (id: string): string[] =>
    loaded.config.devices.groups
      .filter((g) => g.members.some((m) => new RegExp(`^${m.split('*').map(escapeRe).join('.*')}$`).test(id)))
      .map((g) => g.name)
  const devices = rows.filter((r) => r.profile === 'device').map((r) => ({ ...r, groups: groupsOf(r.id) }))
  if (o.json) {
    ctx.out(JSON.stringify(devices, null, 2) + '\n')
    return ExitCode.OK
  }
  if (devices.length === 0) {
    ctx.out('no devices (admit one: edge-agent device add ID --out DIR)\n')
    return ExitCode.OK
  }
  for (const d of devices)
    ctx.out(`${d.id.padEnd(24)} ${d.status.padEnd(8)} expires ${d.notAfter}  groups: ${d.groups.join(', ') || '-'}\n`)
  return ExitCode.OK
}

async function remove(ctx: CommandContext, id: string, o: RemoveFlags): Promise<number> {
  const file = fileToEdit(ctx, o.config)
  if (file === undefined) return ExitCode.CONFIG
  const removedFrom: string[] = []
  const { code } = runEdit(ctx, file, (doc) => {
    const groups = mapItems(seqAt(doc, ['devices', 'groups']))
    for (const g of groups) {
      const members = seqAt(doc, ['devices', 'groups', g.index, 'members'])
      const at = members.items.findIndex((m) => String((m as { value?: unknown }).value ?? m) === id)
      if (at < 0) continue
      if (members.items.length === 1) {
        throw new EditRefused(
          `${id} is the last member of group '${String(g.map.get('name'))}' (a group needs one); remove the group by hand first`,
        )
      }
      members.delete(at)
      removedFrom.push(String(g.map.get('name')))
    }
  })
  if (code !== ExitCode.OK) return code
  if (removedFrom.length > 0) ctx.out(`${id} removed from ${removedFrom.join(', ')} (apply: edge-agent reload)\n`)
  if (o.keepCert) return ExitCode.OK
  const certs = await import('./certs.js')
  return certs.revoke(ctx, id, {
    ...(o.config === undefined ? {} : { config: o.config }),
    set: o.set,
    reason: 'cessationOfOperation',
  })
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
