// The config validator, compiled from the schema by ajv. Compiling the
// schema was the largest single cost of starting the agent (a restart after
// a crash waits for it before any listener opens), so the build writes the
// compiled code beside this module (scripts/gen-config-validator.mjs, ajv
// standalone) and start loads it. The file carries a digest of the schema
// it was made from: a stale or missing one (tests run the sources) is never
// used, the schema is compiled here instead. Same schema, same options:
// `config validate` and `run` give the same verdicts either way.
import { createHash } from 'node:crypto'
import AjvModule, { type ValidateFunction } from 'ajv'
import { AgentConfigSchema, type AgentConfig } from './schema.js'

// ajv ships CommonJS with a default export; under NodeNext it arrives wrapped.
const Ajv = AjvModule.default
const OPTIONS = { allErrors: true, useDefaults: true, strict: true } as const

/** File name of the build's compiled validator, beside this module. */
export const GENERATED_VALIDATOR = 'validate-config.generated.js'

/** Digest of the schema a compiled validator must match. */
export function schemaDigest(): string {
  return createHash('sha256').update(JSON.stringify(AgentConfigSchema)).digest('hex')
}

/** Source of the standalone validator module (ESM): `default` validates, `schemaDigest` names its schema. */
export async function validatorSource(): Promise<string> {
  const standalone = (await import('ajv/dist/standalone/index.js')).default.default
  const ajv = new Ajv({ ...OPTIONS, code: { source: true, esm: true } })
  const code = standalone(ajv, ajv.compile(AgentConfigSchema))
  // The code names ajv's runtime helpers with require(), even as ESM.
  const req = "import { createRequire } from 'node:module'\nconst require = createRequire(import.meta.url)\n"
  return `${req}${code}\nexport const schemaDigest = ${JSON.stringify(schemaDigest())}\n`
}

/** The build's compiled validator if it matches the schema, else one compiled now. */
export async function loadValidator(): Promise<ValidateFunction<AgentConfig>> {
  try {
    const m = (await import(new URL(GENERATED_VALIDATOR, import.meta.url).href)) as {
      default: ValidateFunction<AgentConfig>
      schemaDigest: string
    }
    if (m.schemaDigest === schemaDigest()) return m.default
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err
  }
  return new Ajv(OPTIONS).compile<AgentConfig>(AgentConfigSchema)
}
