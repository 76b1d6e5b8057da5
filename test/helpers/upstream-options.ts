// An upstream as the agent would pass it to a Bridge: the given keys, checked
// against the config schema, with the schema's defaults filled in the way the
// config loader fills them (ajv useDefaults). Defaults are written down only
// in src/agent/config/schema.ts; tests that build a Bridge by hand use this
// instead of restating them.
import AjvModule from 'ajv'
import { UpstreamSchema, type UpstreamConfig } from '../../src/agent/config/schema.js'
import type { BridgeRuleInput } from '../../src/bridge/index.js'

const Ajv = AjvModule.default
const validate = new Ajv({ allErrors: true, useDefaults: true, strict: true }).compile<UpstreamConfig>(UpstreamSchema)

type Given = { readonly name: string; readonly url: string; readonly rules?: readonly BridgeRuleInput[] } & {
  readonly [K in Exclude<keyof UpstreamConfig, 'name' | 'url' | 'rules'>]?: Partial<UpstreamConfig[K]>
}

export function upstreamOptions(given: Given): UpstreamConfig {
  const value: unknown = structuredClone(given)
  if (!validate(value)) throw new Error(`not a valid upstream: ${JSON.stringify(validate.errors)}`)
  return value
}
