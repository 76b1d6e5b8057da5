// A rule built in code (tests, bench, the in-process bridge) goes to
// BridgeRule.parse without passing the config schema, so parse fills what is
// missing itself (rule.ts's header says why it cannot ask the schema). This
// test holds those fallbacks to the schema's defaults: change one without the
// other and it fails.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Value } from 'typebox/value'
import { BridgeRuleSchema } from '../../../src/agent/config/schema.js'
import { BridgeRule, DEFAULT_TTL_SEC } from '../../../src/bridge/rule.js'

test('a hand-built rule gets the same defaults as one from the config schema', () => {
  const minimal = { topic: 'devices/+/telemetry', direction: 'both' as const }
  const fromSchema = Value.Default(BridgeRuleSchema, structuredClone(minimal)) as Record<string, unknown>
  const keys = Object.keys(BridgeRuleSchema.properties).filter((k) => k !== 'name')
  const missing = keys.filter((k) => !(k in fromSchema))
  assert.deepEqual(missing, [], 'every rule key but name has a schema default')
  const byHand = BridgeRule.parse(minimal) as unknown as Record<string, unknown>
  const viaSchema = BridgeRule.parse(fromSchema as never) as unknown as Record<string, unknown>
  for (const k of keys) {
    assert.deepEqual(byHand[k], fromSchema[k], `rule.ts default of ${k}`)
    assert.deepEqual(viaSchema[k], fromSchema[k], `schema default of ${k} survives parse`)
  }
  assert.equal(DEFAULT_TTL_SEC, fromSchema['ttlSec'])
})
