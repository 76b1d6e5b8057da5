// The config validator, compiled from the schema by ajv. Compiling the
// schema, and even evaluating it (typebox), were the largest costs of
// starting the agent (a restart after a crash waits for them before any
// listener opens), so the build writes the compiled validator and the schema
// as plain JSON beside this module (scripts/gen-config-validator.mjs, ajv
// standalone), and start loads that instead. The file carries a digest of the
// compiled schema module it was made from: a stale or missing one (tests run
// the sources) is never used, the schema is compiled here instead. Same
// schema, same options: `config validate` and `run` give the same verdicts
// either way.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { ValidateFunction } from 'ajv'
import type { AgentConfig } from './schema.js'

const OPTIONS = { allErrors: true, useDefaults: true, strict: true } as const

/** File name of the build's compiled validator, beside this module. */
export const GENERATED_VALIDATOR = 'validate-config.generated.js'

/** The schema as JSON: what load.ts walks for env names and messages. */
export interface JsonSchemaNode {
  type?: string
  properties?: Record<string, JsonSchemaNode>
  items?: JsonSchemaNode
  default?: unknown
  description?: string
  enum?: unknown[]
}

export interface ConfigValidator {
  readonly validate: ValidateFunction<AgentConfig>
  readonly schema: JsonSchemaNode
}

/** Digest of the compiled schema module beside this one; undefined where there is none (sources run by tsx). */
export function schemaModuleDigest(): string | undefined {
  try {
    return createHash('sha256')
      .update(readFileSync(new URL('schema.js', import.meta.url)))
      .digest('hex')
  } catch {
    return undefined
  }
}

/** Source of the standalone validator module (ESM): `default` validates, `schema` is the schema as JSON. */
export async function validatorSource(): Promise<string> {
  const [{ default: AjvModule }, { default: standalone }, { AgentConfigSchema }] = await Promise.all([
    import('ajv'),
    import('ajv/dist/standalone/index.js'),
    import('./schema.js'),
  ])
  const ajv = new AjvModule.default({ ...OPTIONS, code: { source: true, esm: true } })
  const code = standalone.default(ajv, ajv.compile(AgentConfigSchema))
  // The code names ajv's runtime helpers with require(), even as ESM.
  const req = "import { createRequire } from 'node:module'\nconst require = createRequire(import.meta.url)\n"
  // JSON.parse of a string literal is the cheapest way for V8 to build a large object.
  const schema = `export const schema = JSON.parse(${JSON.stringify(JSON.stringify(AgentConfigSchema))})\n`
  const digest = `export const schemaModuleDigest = ${JSON.stringify(schemaModuleDigest() ?? null)}\n`
  return `${req}${code}\n${schema}${digest}`
}

/** The build's compiled validator if it matches the schema module, else the schema compiled now. */
export async function loadValidator(): Promise<ConfigValidator> {
  try {
    const m = (await import(new URL(GENERATED_VALIDATOR, import.meta.url).href)) as {
      default: ValidateFunction<AgentConfig>
      schema: JsonSchemaNode
      schemaModuleDigest: string | null
    }
    const digest = schemaModuleDigest()
    if (digest !== undefined && m.schemaModuleDigest === digest) return { validate: m.default, schema: m.schema }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err
  }
  const [{ default: AjvModule }, { AgentConfigSchema }] = await Promise.all([import('ajv'), import('./schema.js')])
  return {
    validate: new AjvModule.default(OPTIONS).compile<AgentConfig>(AgentConfigSchema),
    schema: AgentConfigSchema as unknown as JsonSchemaNode,
  }
}
