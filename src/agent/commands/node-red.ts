// `edge-agent nodered ...`: Node-RED in the agent, managed from the CLI.
// `passwd` writes a bcrypt hash to the state directory (no agent needed; the
// agent reads the file at each login). `deploy` and `export` talk to the
// running agent's Node-RED admin API with the bearer token it keeps in the
// state directory (src/node-red/admin-client.ts).
import { readFile, writeFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { Command } from 'commander'
import {
  NodeRedError,
  NodeRedState,
  loadAddonModule,
  type Bcrypt,
  checkPassword,
  checkUsername,
  deployFlows,
  exportFlows,
  parseFlows,
  readCliEndpoint,
} from '../../node-red/index.js'
import type { LoadedConfig } from '../config/load.js'
import { ExitCode, EXIT_CODES_HELP } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

export function nodeRedCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const cmd = new Command('nodered').description(
    'Node-RED inside the agent: admin users, deploying and exporting flows',
  )
  cmd.addCommand(
    withConfigOptions(
      new Command('passwd')
        .description(
          'add a Node-RED admin user or change its password (bcrypt hash in <dataDir>/node-red/users.json, 0600)',
        )
        .argument('<user>', 'user name')
        .option(
          '--password-file <file>',
          'file holding the password (8-72 bytes; /dev/stdin to pipe it); required unless --delete',
        )
        .option('--read-only', 'the user may look at flows but not deploy', false)
        .option('--delete', 'remove the user instead', false)
        .addHelpText(
          'after',
          `\nExamples:\n  $ printf '%s' "$PW" | edge-agent nodered passwd admin --password-file /dev/stdin\n  $ edge-agent nodered passwd viewer --password-file pw.txt --read-only\n${EXIT_CODES_HELP}`,
        ),
    ).action((user: string, o: ConfigFlags & { passwordFile?: string; readOnly: boolean; delete: boolean }) =>
      done(passwd(ctx, user, o)),
    ),
  )
  cmd.addCommand(
    withConfigOptions(
      new Command('deploy')
        .description('check a flow file (Node-RED JSON array) and deploy it to the running agent, replacing all flows')
        .argument('<flows.json>', 'flow file, as exported by the editor or `nodered export`')
        .option('--check', 'only check the file; deploy nothing', false)
        .addHelpText(
          'after',
          `\nExamples:\n  $ edge-agent nodered deploy flows.json\n  $ edge-agent nodered deploy --check flows.json\n${EXIT_CODES_HELP}`,
        ),
    ).action((file: string, o: ConfigFlags & { check: boolean }) => done(deploy(ctx, file, o))),
  )
  cmd.addCommand(
    withConfigOptions(
      new Command('export')
        .description("print the running agent's flows (JSON), or write them to a file")
        .option('-o, --out <file>', 'write to this file (0600) instead of stdout')
        .addHelpText('after', `\nExamples:\n  $ edge-agent nodered export > flows.json\n${EXIT_CODES_HELP}`),
    ).action((o: ConfigFlags & { out?: string }) => done(exportCmd(ctx, o))),
  )
  return cmd
}

function enabledConfig(ctx: CommandContext, o: ConfigFlags): LoadedConfig | number {
  const loaded = loadOrReport(ctx, o)
  if (typeof loaded === 'number') return loaded
  if (!loaded.config.nodeRed.enabled) {
    ctx.err(
      'edge-agent: EDGE_ERR_NODERED_DISABLED: Node-RED is disabled in this config; set nodeRed.enabled: true and restart the agent\n',
    )
    return ExitCode.CONFIG
  }
  return loaded
}

function report(ctx: CommandContext, err: unknown): number {
  if (!(err instanceof NodeRedError)) throw err
  ctx.err(`edge-agent: ${err.code}: ${err.message}\n`)
  switch (err.code) {
    case 'EDGE_ERR_NODERED_UNREACHABLE':
      return ExitCode.UNAVAILABLE
    case 'EDGE_ERR_NODERED_FLOWS_INVALID':
    case 'EDGE_ERR_NODERED_USER_INVALID':
      return ExitCode.USAGE
    default:
      return ExitCode.FAILURE
  }
}

async function passwd(
  ctx: CommandContext,
  user: string,
  o: ConfigFlags & { passwordFile?: string; readOnly: boolean; delete: boolean },
): Promise<number> {
  const loaded = loadOrReport(ctx, o)
  if (typeof loaded === 'number') return loaded
  const state = new NodeRedState(loaded.config.dataDir)
  try {
    checkUsername(user)
    if (o.delete) {
      const removed = await state.removeUser(user)
      ctx.err(removed ? `edge-agent: user ${user} removed\n` : `edge-agent: no user ${user}\n`)
      return removed ? ExitCode.OK : ExitCode.FAILURE
    }
    if (o.passwordFile === undefined) {
      ctx.err('edge-agent: give --password-file FILE (or /dev/stdin), or --delete\n')
      return ExitCode.USAGE
    }
    let password: string
    try {
      password = (await readFile(resolve(ctx.cwd, o.passwordFile), 'utf8')).replace(/\r?\n$/, '')
    } catch (err) {
      ctx.err(`edge-agent: cannot read ${o.passwordFile}: ${(err as Error).message}\n`)
      return ExitCode.USAGE
    }
    checkPassword(password)
    const bcrypt = await loadAddonModule<Bcrypt>('bcryptjs')
    const hash = await bcrypt.hash(password, 10)
    const what = await state.setUser({ username: user, password: hash, permissions: o.readOnly ? 'read' : '*' })
    ctx.err(
      `edge-agent: user ${user} ${what} in ${state.usersFile}${loaded.config.nodeRed.enabled ? '' : ' (nodeRed.enabled is false in this config)'}\n`,
    )
    return ExitCode.OK
  } catch (err) {
    return report(ctx, err)
  }
}

async function deploy(ctx: CommandContext, file: string, o: ConfigFlags & { check: boolean }): Promise<number> {
  const loaded = enabledConfig(ctx, o)
  if (typeof loaded === 'number') return loaded
  const path = resolve(ctx.cwd, file)
  try {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      ctx.err(`edge-agent: cannot read ${path}: ${(err as Error).message}\n`)
      return ExitCode.USAGE
    }
    const flows = parseFlows(text, file)
    const tabs = flows.filter((n) => n.type === 'tab').length
    if (o.check) {
      ctx.out(`${file}: ${flows.length} nodes in ${tabs} flows, valid\n`)
      return ExitCode.OK
    }
    const ep = await readCliEndpoint(loaded.config.dataDir)
    await deployFlows(ep, flows)
    ctx.out(`deployed ${flows.length} nodes in ${tabs} flows to ${ep.url}\n`)
    return ExitCode.OK
  } catch (err) {
    return report(ctx, err)
  }
}

async function exportCmd(ctx: CommandContext, o: ConfigFlags & { out?: string }): Promise<number> {
  const loaded = enabledConfig(ctx, o)
  if (typeof loaded === 'number') return loaded
  try {
    const flows = await exportFlows(await readCliEndpoint(loaded.config.dataDir))
    const text = JSON.stringify(flows, null, 2) + '\n'
    if (o.out === undefined) ctx.out(text)
    else await writeFile(resolve(ctx.cwd, o.out), text, { mode: 0o600 })
    return ExitCode.OK
  } catch (err) {
    return report(ctx, err)
  }
}
