// CLI start time: median wall time of `edge-agent --version`, `status` (against
// a closed admin port, so that nothing waits on the network) and `config
// validate`, over N runs each. Run after `npm run build`:
//   node --import tsx bench/cli-startup.ts [runs]
// Compare with bare `node -e 0` (printed too): the floor on this machine.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const MAIN = resolve(import.meta.dirname, '../dist/agent/main.js')
const runs = Number(process.argv[2] ?? 9)
const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-cli-'))
const config = join(dir, 'site.yaml')
writeFileSync(config, `site: { name: bench, level: 2 }\ndataDir: ${join(dir, 'data')}\nadmin: { port: 1 }\n`)

const cases: [string, string[]][] = [
  ['node -e 0 (floor)', ['-e', '0']],
  ['edge-agent --version', [MAIN, '--version']],
  ['edge-agent status --url (no config)', [MAIN, 'status', '--url', 'http://127.0.0.1:1']],
  ['edge-agent status (config)', [MAIN, 'status', '--config', config]],
  ['edge-agent config validate', [MAIN, 'config', 'validate', '--config', config]],
]
console.log('| command | median s | min s |\n|---|---|---|')
for (const [name, args] of cases) {
  const times: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    spawnSync(process.execPath, args, { stdio: 'ignore' })
    times.push((performance.now() - t0) / 1000)
  }
  times.sort((a, b) => a - b)
  console.log(`| ${name} | ${(times[Math.floor(times.length / 2)] ?? 0).toFixed(2)} | ${(times[0] ?? 0).toFixed(2)} |`)
}
rmSync(dir, { recursive: true, force: true })
