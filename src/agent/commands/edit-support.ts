// What the editing commands (site, bridge, device) share: which file they
// edit, and how a refused or invalid edit is reported (the file untouched).
import { isMap, isSeq, type Document, type YAMLMap, type YAMLSeq } from 'yaml'
import { locateConfig, describeLocation, defaultConfigPath } from '../config/locate.js'
import { ConfigError } from '../config/errors.js'
import { EditRefused, editConfigFile, type EditResult } from '../config/edit.js'
import { ExitCode } from '../exit-codes.js'
import type { CommandContext } from './context.js'

/** The file an edit goes to; undefined (with a message printed) when there is none. */
export function fileToEdit(ctx: CommandContext, flag: string | undefined): string | undefined {
  const loc = locateConfig(ctx.env, ctx.cwd, flag)
  if (loc.file !== undefined) return loc.file
  ctx.err(
    `edge-agent: no config file to edit (no --config, no $EDGE_AGENT_CONFIG, no ${defaultConfigPath(ctx.env)}).\n` +
      'Create one with `edge-agent site init`, or name it with --config FILE.\n',
  )
  return undefined
}

/** Runs an edit; prints why a refused one was refused. Resolves with the exit code and the result. */
export function runEdit(
  ctx: CommandContext,
  file: string,
  mutate: (doc: Document) => void,
  initial?: string,
): { code: number; result?: EditResult } {
  if (ctx.stderrIsTty) ctx.err(`${describeLocation({ file, source: 'flag' }).replace(' (--config)', '')}\n`)
  try {
    const result = editConfigFile(file, mutate, {
      env: ctx.env,
      cwd: ctx.cwd,
      ...(initial === undefined ? {} : { initial }),
    })
    return { code: ExitCode.OK, result }
  } catch (e) {
    if (e instanceof EditRefused) {
      ctx.err(`edge-agent: ${e.message}; ${file} not changed\n`)
      return { code: ExitCode.FAILURE }
    }
    if (e instanceof ConfigError) {
      ctx.err(
        `edge-agent: the edit would make the config invalid; ${file} not changed:\n${e.message.split('\n').slice(1).join('\n')}\n`,
      )
      return { code: ExitCode.CONFIG }
    }
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      ctx.err(`edge-agent: ${file} does not exist; create it with \`edge-agent site init --config ${file}\`\n`)
      return { code: ExitCode.CONFIG }
    }
    throw e
  }
}

/** The sequence at `path`, created (block style) when absent. */
export function seqAt(doc: Document, path: (string | number)[]): YAMLSeq {
  const node = doc.getIn(path, true)
  if (isSeq(node)) return node
  if (node !== undefined && node !== null) throw new EditRefused(`${path.join('.')} is not a list in the file`)
  const seq = doc.createNode([]) as YAMLSeq
  doc.setIn(path, seq)
  return seq
}

/** Items of a sequence that are maps, with their index. */
export function mapItems(seq: YAMLSeq): { map: YAMLMap; index: number }[] {
  return seq.items.flatMap((item, index) => (isMap(item) ? [{ map: item, index }] : []))
}

export { EditRefused }
