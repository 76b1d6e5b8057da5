#!/usr/bin/env node
// Strip a production node_modules down to what runs: usage
//   node scripts/lib/prune-node-modules.mjs <app dir holding package-lock.json and node_modules>
// Prints one JSON line: {"before": bytes, "after": bytes, "removed": {category: bytes}}.
//
// What goes, and why it is safe:
// - install-time-only packages: prebuild-install and whatever only it pulls in
//   (better-sqlite3's install script downloads prebuilt binaries; we compile instead).
//   Computed from the lockfile's graph, so a package that anything else needs stays.
// - better-sqlite3's C sources (deps/, src/), binding.gyp and every build
//   intermediate: only build/Release/better_sqlite3.node is loaded (via `bindings`).
// - type declarations (*.d.ts, *.d.mts, *.d.cts), @types/*, TypeScript sources
//   (*.ts, *.mts, *.cts: Node 20 cannot run them), source maps.
// - documentation: *.md / *.markdown except licence files; top-level test, tests,
//   __tests__, benchmark(s), example(s), .github, coverage dirs of each package.
//   Licence, notice and copying files always stay.
// Directories named doc/docs are kept: some packages keep code there (yaml's dist/doc).
import { lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'

const app = process.argv[2]
if (!app) {
  console.error('usage: prune-node-modules.mjs <app dir>')
  process.exit(2)
}
const nm = join(app, 'node_modules')
const removed = {}

function size(p) {
  const st = lstatSync(p, { throwIfNoEntry: false })
  if (!st) return 0
  if (!st.isDirectory()) return st.size
  let total = 0
  for (const e of readdirSync(p)) total += size(join(p, e))
  return total
}

function remove(p, category) {
  const bytes = size(p)
  if (bytes === 0 && !lstatSync(p, { throwIfNoEntry: false })) return
  rmSync(p, { recursive: true, force: true })
  removed[category] = (removed[category] ?? 0) + bytes
}

const before = size(nm)

// 1. install-time-only packages (lockfile graph without better-sqlite3 -> prebuild-install)
const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')).packages
const installed = (p) => lock[p] && lstatSync(join(app, p), { throwIfNoEntry: false })
function resolveDep(from, name) {
  let p = from
  for (;;) {
    const candidate = `${p ? `${p}/` : ''}node_modules/${name}`
    if (installed(candidate)) return candidate
    if (!p) return null
    const i = p.lastIndexOf('/node_modules/')
    p = i < 0 ? '' : p.slice(0, i)
  }
}
function reachable(skipPrebuild) {
  const seen = new Set()
  const stack = ['']
  while (stack.length) {
    const p = stack.pop()
    if (seen.has(p)) continue
    seen.add(p)
    const e = lock[p] ?? {}
    const names = Object.keys({ ...e.dependencies, ...e.optionalDependencies, ...e.peerDependencies })
    for (const name of names) {
      if (skipPrebuild && name === 'prebuild-install' && p.endsWith('node_modules/better-sqlite3')) continue
      const r = resolveDep(p, name)
      if (r) stack.push(r)
    }
  }
  return seen
}
const runtime = reachable(true)
for (const p of reachable(false))
  if (!runtime.has(p)) remove(join(app, p), 'install-time packages (prebuild-install tree)')

// 2. better-sqlite3: keep only the compiled addon
const bs = join(nm, 'better-sqlite3')
for (const e of ['deps', 'src', 'binding.gyp']) remove(join(bs, e), 'better-sqlite3 sources')
const build = join(bs, 'build')
for (const e of readdirSync(build)) if (e !== 'Release') remove(join(build, e), 'better-sqlite3 build intermediates')
for (const e of readdirSync(join(build, 'Release'))) {
  if (e !== 'better_sqlite3.node') remove(join(build, 'Release', e), 'better-sqlite3 build intermediates')
}

// 3. @types
remove(join(nm, '@types'), 'type declarations')

// 4. per-package directories and files
const LICENCE = /^(licen[cs]e|copying|notice|authors)/i
const PKG_DIRS = new Set([
  'test',
  'tests',
  '__tests__',
  'benchmark',
  'benchmarks',
  'example',
  'examples',
  '.github',
  'coverage',
])
function walk(dir, isPackageRoot) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) {
      if (e.name === 'node_modules') {
        walkModules(p)
      } else if (isPackageRoot && PKG_DIRS.has(e.name)) {
        remove(p, 'tests, examples and benchmarks')
      } else {
        walk(p, false)
      }
      continue
    }
    if (!e.isFile()) continue
    const n = e.name
    if (LICENCE.test(n)) continue
    if (/\.d\.[mc]?ts$/.test(n)) remove(p, 'type declarations')
    else if (/\.[mc]?ts$/.test(n) || n === 'tsconfig.json') remove(p, 'TypeScript sources')
    else if (/\.(js|mjs|cjs|css)\.map$|\.map$/.test(n)) remove(p, 'source maps')
    else if (/\.(md|markdown)$/i.test(n) || /^(changelog|history)/i.test(n)) remove(p, 'documentation')
    else if (/^\.(eslintrc|prettierrc|editorconfig|npmignore|travis\.yml|taprc|nycrc)/.test(n))
      remove(p, 'tooling dotfiles')
  }
}
function walkModules(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory()) continue
    const p = join(dir, e.name)
    if (e.name.startsWith('@')) walkModules(p)
    else if (e.name === '.bin') remove(p, 'bin links (.bin)')
    else walk(p, true)
  }
}
walkModules(nm)

const after = size(nm)
console.log(JSON.stringify({ before, after, removed }))
