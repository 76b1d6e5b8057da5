// Build step: writes the compiled config validator into dist (see src/agent/config/validator.ts).
import { writeFileSync } from 'node:fs'
import { GENERATED_VALIDATOR, validatorSource } from '../dist/agent/config/validator.js'

writeFileSync(new URL(`../dist/agent/config/${GENERATED_VALIDATOR}`, import.meta.url), await validatorSource())
