#!/usr/bin/env node
// Lay out the Node-RED add-on tree from a full production install: usage
//   node scripts/lib/node-red-addon.mjs <stage dir with package-lock.json and node_modules> <out dir>
// Copies node-red and exactly the packages it needs at run time (the lockfile's
// graph from node_modules/node-red, `dependencies` and `peerDependencies`; not
// optional peers nor `optionalDependencies`, which are native speed-ups with per-CPU binaries such
// as @node-rs/bcrypt: Node-RED falls back to bcryptjs) into <out>/node_modules,
// keeping each package's path, so that Node's resolution inside the add-on
// tree finds the same versions the lockfile pinned. Packages the base release
// also has are copied too: the two trees never share files, so the add-on
// package and the base package cannot conflict in dpkg.
// Prints one JSON line: {"packages": n, "bytes": n}.
import { cpSync, lstatSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const [stage, out] = process.argv.slice(2)
if (!stage || !out) {
  console.error('usage: node-red-addon.mjs <stage dir> <out dir>')
  process.exit(2)
}
const lock = JSON.parse(readFileSync(join(stage, 'package-lock.json'), 'utf8')).packages
const installed = (p) => lock[p] !== undefined && lstatSync(join(stage, p), { throwIfNoEntry: false }) !== undefined
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
const root = 'node_modules/node-red'
if (!installed(root)) {
  console.error(`node-red is not installed in ${stage}`)
  process.exit(1)
}
const seen = new Set()
const stack = [root]
while (stack.length > 0) {
  const p = stack.pop()
  if (seen.has(p)) continue
  seen.add(p)
  const e = lock[p] ?? {}
  const optionalPeers = new Set(
    Object.keys(e.peerDependenciesMeta ?? {}).filter((n) => e.peerDependenciesMeta[n].optional),
  )
  for (const name of Object.keys({ ...e.dependencies, ...e.peerDependencies })) {
    if (optionalPeers.has(name)) continue
    const r = resolveDep(p, name)
    if (r) stack.push(r)
    else {
      console.error(`${p} needs ${name}, which is not installed`)
      process.exit(1)
    }
  }
}
function size(p) {
  const st = lstatSync(p)
  if (!st.isDirectory()) return st.size
  let total = 0
  for (const e of readdirSync(p)) total += size(join(p, e))
  return total
}
let bytes = 0
// Parents before children: a nested node_modules lands inside its copied parent.
for (const p of [...seen].sort()) {
  // A nested package dir is copied with its parent; copy only this package's own files.
  cpSync(join(stage, p), join(out, p), {
    recursive: true,
    filter: (src) => !src.slice(join(stage, p).length).includes('/node_modules/') && !src.endsWith(`${p}/node_modules`),
  })
  bytes += size(join(out, p))
}
console.log(JSON.stringify({ packages: seen.size, bytes }))
