// The build's compiled config validator (validator.ts) gives the same verdicts, the same errors and the same
// defaults as the schema compiled at start, carries the same schema as JSON, and a validator made from another
// schema module is never used.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { appendFileSync, copyFileSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import AjvModule, { type ValidateFunction } from 'ajv'
import { parse } from 'yaml'
import { EXAMPLE_CONFIG } from '../../../src/agent/config/example.js'
import { AgentConfigSchema } from '../../../src/agent/config/schema.js'
import { loadValidator, schemaModuleDigest, validatorSource } from '../../../src/agent/config/validator.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

/** The example as load.ts hands it over (dataDir resolved from the command line or the default). */
const example = (): Record<string, unknown> => ({
  ...(parse(EXAMPLE_CONFIG) as object),
  dataDir: '/var/lib/edge-agent',
})

const configs: unknown[] = [
  example(),
  {},
  { site: { name: 'a b', level: 9 } },
  { buffer: { maxFsyncsPerSecond: -1, durability: 'sometimes' }, extra: true },
  { broker: { listeners: [{ protocol: 'mqtt', port: 70000 }] }, upstreams: [{ name: 'u' }] },
  { log: 'debug', dataDir: 5 },
]

test('the generated validator agrees with the compiled schema on verdict, errors and defaults', async (t) => {
  const dir = tmpDir(t)
  // Its require() of ajv's runtime resolves from where it lies, as in dist.
  symlinkSync(resolve(import.meta.dirname, '../../../node_modules'), join(dir, 'node_modules'))
  const file = join(dir, 'validate.mjs')
  writeFileSync(file, await validatorSource())
  const generated = (await import(pathToFileURL(file).href)) as {
    default: ValidateFunction
    schema: unknown
    schemaModuleDigest: string | null
  }
  assert.deepEqual(generated.schema, JSON.parse(JSON.stringify(AgentConfigSchema)), 'the schema as JSON')
  assert.equal(generated.schemaModuleDigest, schemaModuleDigest() ?? null)
  const compiled = new AjvModule.default({ allErrors: true, useDefaults: true, strict: true }).compile(
    AgentConfigSchema,
  )
  for (const c of configs) {
    const a = structuredClone(c)
    const b = structuredClone(c)
    const va = generated.default(a)
    const vb = compiled(b)
    assert.equal(va, vb, JSON.stringify(c))
    assert.deepEqual(generated.default.errors ?? null, compiled.errors ?? null, JSON.stringify(c))
    assert.deepEqual(a, b, 'the same defaults filled in')
  }
  assert.equal(generated.default(example()), true, 'the example is valid')
  assert.equal(generated.default({ ...example(), buffer: { maxFsyncsPerSecond: 10001 } }), false)
})

test('without a generated validator of this schema, the schema is compiled at start', async () => {
  const { validate: v, schema } = await loadValidator()
  const cfg = { ...example(), buffer: {} }
  assert.equal(v(cfg), true)
  assert.equal((cfg.buffer as { maxFsyncsPerSecond: number }).maxFsyncsPerSecond, 100, 'defaults filled in')
  assert.equal(v({ ...cfg, buffer: { maxFsyncsPerSecond: 'x' } }), false)
  assert.equal(schema, AgentConfigSchema)
})

// The build's files (npm test builds first): the generated validator is used beside the schema module it was
// made from, and not beside a changed one.
const DIST = resolve(import.meta.dirname, '../../../dist/agent/config')

test('the build uses its generated validator, and not once the schema module changed', async (t) => {
  assert.ok(existsSync(join(DIST, 'validate-config.generated.js')), 'dist is built (npm run build)')
  const layout = (name: string, change: boolean): string => {
    const dir = join(tmpDir(t), name)
    mkdirSync(dir)
    symlinkSync(resolve(import.meta.dirname, '../../../node_modules'), join(dir, 'node_modules'))
    for (const f of ['validator.js', 'validate-config.generated.js', 'schema.js'])
      copyFileSync(join(DIST, f), join(dir, f))
    if (change) appendFileSync(join(dir, 'schema.js'), '\n// changed after the build\n')
    return dir
  }
  type Mod = { loadValidator: typeof loadValidator }
  type Gen = { default: ValidateFunction }
  for (const change of [false, true]) {
    const dir = layout(change ? 'changed' : 'as-built', change)
    const mod = (await import(pathToFileURL(join(dir, 'validator.js')).href)) as Mod
    const gen = (await import(pathToFileURL(join(dir, 'validate-config.generated.js')).href)) as Gen
    const { validate } = await mod.loadValidator()
    if (change) assert.notEqual(validate, gen.default, 'a schema module changed since the build: compiled anew')
    else assert.equal(validate, gen.default, 'the generated validator of this very schema module')
    assert.equal(validate({ ...example(), buffer: {} }), true)
  }
})
