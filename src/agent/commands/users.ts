// `edge-agent users add|passwd|remove|list`: the broker's password file
// (broker.auth.passwordFile, default <dataDir>/passwd), in Mosquitto's format.
// Passwords come from a prompt on a terminal, else from the first line of
// stdin; never from argv, where `ps` and the shell history would show them.
// The file is replaced atomically (0600); a running agent re-reads it within
// a second, without a restart.
import { readFile, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Command } from 'commander'
import { writeAtomic } from '../../certs/index.js'
import { PasswordFile, PasswordFileError, usernameProblem } from '../../local-broker/index.js'
import { passwordFilePath } from '../config/paths.js'
import { ExitCode } from '../exit-codes.js'
import { table } from '../status-view.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

const HELP = `
The password file is broker.auth.passwordFile (default <dataDir>/passwd), in
Mosquitto's format: a password_file made by mosquitto_passwd works as is.
Run as the service user; a running agent applies changes within a second.
Passwords are read from a prompt, or from the first line of stdin:
  $ edge-agent users add plc-gw-1
  $ printf '%s\\n' "$PW" | edge-agent users add plc-gw-1
${CONFIG_HELP}`

export function usersCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const users = new Command('users').description('users of the local broker (user name and password logins)')
  users.addHelpText('after', HELP)
  withConfigOptions(
    users
      .command('add')
      .argument('<username>')
      .description('add a user (fails if the user exists)')
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent users add plc-7            # asks twice on a terminal\n  $ printf "%s\\n" "$PW" | edge-agent users add hmi-2',
      ),
  ).action((username: string, o: ConfigFlags) => done(setPassword(ctx, o, username, 'add')))
  withConfigOptions(
    users
      .command('passwd')
      .argument('<username>')
      .description("change a user's password")
      .addHelpText('after', '\nExamples:\n  $ edge-agent users passwd plc-7'),
  ).action((username: string, o: ConfigFlags) => done(setPassword(ctx, o, username, 'passwd')))
  withConfigOptions(
    users
      .command('remove')
      .argument('<username>')
      .description('remove a user')
      .addHelpText('after', '\nExamples:\n  $ edge-agent users remove plc-7'),
  ).action((username: string, o: ConfigFlags) => done(remove(ctx, o, username)))
  withConfigOptions(
    users
      .command('list')
      .description('list the users and their hash types')
      .option('--json', 'JSON output', false)
      .addHelpText('after', '\nExamples:\n  $ edge-agent users list\n  $ edge-agent users list --json'),
  ).action((o: ConfigFlags & { json: boolean }) => done(list(ctx, o)))
  return users
}

async function setPassword(
  ctx: CommandContext,
  o: ConfigFlags,
  username: string,
  mode: 'add' | 'passwd',
): Promise<number> {
  const path = pathOrCode(ctx, o)
  if (typeof path === 'number') return path
  const problem = usernameProblem(username)
  if (problem !== undefined) return usage(ctx, `user name ${problem}`)
  const file = await readOrReport(ctx, path)
  if (typeof file === 'number') return file
  if (mode === 'add' && file.has(username))
    return failure(ctx, `${username} exists in ${path}; use \`edge-agent users passwd ${username}\``)
  if (mode === 'passwd' && !file.has(username))
    return failure(ctx, `${username} is not in ${path}; use \`edge-agent users add ${username}\``)
  const password = await ctx.readSecret(`password for ${username}: `, true)
  if (password === undefined || password.length === 0)
    return usage(ctx, 'no password given (a prompt on a terminal, else the first line of stdin)')
  const next = await file.withPassword(username, Buffer.from(password, 'utf8'))
  await save(path, next)
  ctx.err(`${mode === 'add' ? 'added' : 'changed the password of'} ${username} in ${path}\n`)
  return ExitCode.OK
}

async function remove(ctx: CommandContext, o: ConfigFlags, username: string): Promise<number> {
  const path = pathOrCode(ctx, o)
  if (typeof path === 'number') return path
  const file = await readOrReport(ctx, path)
  if (typeof file === 'number') return file
  if (!file.has(username)) return failure(ctx, `${username} is not in ${path}`)
  await save(path, file.without(username))
  ctx.err(`removed ${username} from ${path} (connected sessions stay until they reconnect)\n`)
  return ExitCode.OK
}

async function list(ctx: CommandContext, o: ConfigFlags & { json: boolean }): Promise<number> {
  const path = pathOrCode(ctx, o)
  if (typeof path === 'number') return path
  const file = await readOrReport(ctx, path)
  if (typeof file === 'number') return file
  const rows = file.entries().map((e) => ({ username: e.username, hash: file.kindOf(e.username) ?? '' }))
  if (o.json) ctx.out(JSON.stringify({ file: path, users: rows }, null, 2) + '\n')
  else if (rows.length === 0) ctx.err(`no users in ${path}\n`)
  else
    ctx.out(
      table(
        ['USERNAME', 'HASH'],
        rows.map((r) => [r.username, r.hash]),
      ),
    )
  return ExitCode.OK
}

function pathOrCode(ctx: CommandContext, o: ConfigFlags): string | number {
  const loaded = loadOrReport(ctx, o)
  if (typeof loaded === 'number') return loaded
  return passwordFilePath(loaded.config)
}

/** The file's users; an absent file has none. */
async function readOrReport(ctx: CommandContext, path: string): Promise<PasswordFile | number> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return PasswordFile.empty()
    return failure(ctx, `cannot read ${path}: ${(err as Error).message}`)
  }
  try {
    return PasswordFile.parse(text, path)
  } catch (err) {
    if (err instanceof PasswordFileError) return failure(ctx, `${err.message} [${err.code}]`)
    throw err
  }
}

async function save(path: string, file: PasswordFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeAtomic(path, file.serialize(), 0o600)
}

function usage(ctx: CommandContext, message: string): number {
  ctx.err(`edge-agent: ${message}\n`)
  return ExitCode.USAGE
}

function failure(ctx: CommandContext, message: string): number {
  ctx.err(`edge-agent: ${message}\n`)
  return ExitCode.FAILURE
}
