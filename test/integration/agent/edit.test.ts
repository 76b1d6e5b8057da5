// Commissioning from the command line: site init (flags and interactive,
// through a pseudo-terminal), bridge and device edits that keep comments, are
// validated before writing and leave the file byte-identical when refused.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { AGENT_MAIN, runCli } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const SITE = `# Press hall, line 3 (commissioned 2026-11)
site:
  name: hall-3   # as the MES knows it
  level: 2

upstreams:
  # the site broker, level 3
  - name: up
    url: mqtt://127.0.0.1:1883
    rules:
      - { topic: 'devices/+/telemetry', direction: out }   # all telemetry
`

function siteFile(dir: string, text = SITE): string {
  const file = join(dir, 'site.yaml')
  writeFileSync(file, `${text}dataDir: ${join(dir, 'state')}\n`)
  chmodSync(file, 0o640)
  return file
}

test('bridge add and remove keep the comments, validate, and write atomically', async (t) => {
  const dir = tmpDir(t)
  const file = siteFile(dir)
  const original = readFileSync(file, 'utf8')
  const add = await runCli([
    'bridge',
    'add',
    '--config',
    file,
    '--upstream',
    'up',
    '--topic',
    'devices/+/cmd',
    '--direction',
    'in',
    '--qos',
    '0',
  ])
  assert.equal(add.code, 0, add.stderr)
  const added = readFileSync(file, 'utf8')
  for (const comment of [
    '# Press hall, line 3',
    '# as the MES knows it',
    '# the site broker, level 3',
    '# all telemetry',
  ])
    assert.ok(added.includes(comment), comment)
  const rules = (parse(added) as { upstreams: { rules: { topic: string; direction: string; qos?: number }[] }[] })
    .upstreams[0]?.rules
  assert.deepEqual(rules?.[1], { topic: 'devices/+/cmd', direction: 'in', qos: 0 })
  assert.equal(statSync(file).mode & 0o777, 0o640, 'mode kept')
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('.tmp')),
    [],
    'no temp file left',
  )

  const created = await runCli([
    'bridge',
    'add',
    '-c',
    file,
    '-u',
    'cloud',
    '--url',
    'mqtts://broker.example:8883',
    '-t',
    'alarms/#',
    '-d',
    'out',
  ])
  assert.equal(created.code, 0, created.stderr)
  const listed = await runCli(['bridge', 'list', '-c', file, '--json'])
  const body = JSON.parse(listed.stdout) as { upstreams: { name: string; rules: { topic: string }[] }[] }
  assert.deepEqual(
    body.upstreams.map((u) => [u.name, u.rules.map((r) => r.topic)]),
    [
      ['up', ['devices/+/telemetry', 'devices/+/cmd']],
      ['cloud', ['alarms/#']],
    ],
  )

  const rm = await runCli(['bridge', 'remove', '-c', file, '-u', 'up', '-t', 'devices/+/cmd'])
  assert.equal(rm.code, 0, rm.stderr)
  const rmAll = await runCli(['bridge', 'remove', '-c', file, '-u', 'cloud', '--all'])
  assert.equal(rmAll.code, 0, rmAll.stderr)
  assert.deepEqual(parse(readFileSync(file, 'utf8')), parse(original), 'back to the same config')
  for (const comment of [
    '# Press hall, line 3',
    '# as the MES knows it',
    '# the site broker, level 3',
    '# all telemetry',
  ]) {
    assert.ok(readFileSync(file, 'utf8').includes(comment), `${comment} survived add and remove`)
  }
})

test('a refused edit leaves the file byte-identical and says why', async (t) => {
  const dir = tmpDir(t)
  const file = siteFile(dir)
  const before = readFileSync(file)
  const cases: [string[], number, RegExp][] = [
    [
      ['bridge', 'add', '-u', 'up', '-t', 'a/#/b', '-d', 'out'],
      78,
      /would make the config invalid.*\n.*rules\[1\]\.topic/,
    ],
    [['bridge', 'add', '-u', 'nope', '-t', 'a', '-d', 'out'], 1, /no upstream 'nope' \(have: up\); pass --url/],
    [['bridge', 'add', '-u', 'up', '-t', 'devices/+/telemetry', '-d', 'out'], 1, /already has a out rule/],
    [['bridge', 'add', '-u', 'x', '--url', 'http://h', '-t', 'a', '-d', 'out'], 78, /url: must match/],
    [['bridge', 'remove', '-u', 'up', '-t', 'not/there'], 1, /has no rule for 'not\/there'/],
    [['device', 'add', 'press-1', '--group', 'nope'], 1, /no device group 'nope'/],
  ]
  for (const [args, code, says] of cases) {
    const r = await runCli([...args, '--config', file])
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, says)
    assert.match(r.stderr, /not changed/)
    assert.deepEqual(readFileSync(file), before, `${args.join(' ')} left the file byte-identical`)
  }
  // A file with a syntax error is not rewritten either.
  writeFileSync(file, 'site: [unclosed\n')
  const broken = readFileSync(file)
  const r = await runCli(['bridge', 'add', '-c', file, '-u', 'up', '-t', 'a', '-d', 'out'])
  assert.notEqual(r.code, 0)
  assert.deepEqual(readFileSync(file), broken)
})

test('site init from flags writes a valid config, the state dir and the CA; refuses to overwrite', async (t) => {
  const root = tmpDir(t)
  const env = { EDGE_AGENT_SYSCONFDIR: join(root, 'etc'), EDGE_AGENT_CONFIG: '', CONFIGURATION_DIRECTORY: '' }
  const state = join(root, 'state')
  const r = await runCli(
    [
      'site',
      'init',
      '--no-input',
      '--name',
      'press-hall',
      '--level',
      '3',
      '--upstream-url',
      'mqtt://127.0.0.1:1883',
      '--listener',
      'mqtts:127.0.0.1:8883',
      '--data-dir',
      state,
      '--ca',
    ],
    { env, cwd: root },
  )
  assert.equal(r.code, 0, r.stderr)
  const file = join(root, 'etc', 'edge-agent', 'config.yaml')
  const config = parse(readFileSync(file, 'utf8')) as Record<string, any>
  assert.deepEqual(config['site'], { name: 'press-hall', level: 3 })
  assert.deepEqual(config['broker'].listeners, [{ protocol: 'mqtts', host: '127.0.0.1', port: 8883 }])
  assert.equal(config['upstreams'][0].url, 'mqtt://127.0.0.1:1883')
  assert.ok(existsSync(join(state, 'certs', 'ca.crt')), 'CA created')
  assert.equal(statSync(state).mode & 0o777, 0o700)
  // The default path is found without --config, and run would accept it.
  const v = await runCli(['config', 'validate'], { env, cwd: root })
  assert.equal(v.code, 0, v.stderr)
  const show = await runCli(['site', 'show', '--json'], { env, cwd: root })
  assert.equal((JSON.parse(show.stdout) as { localCa: boolean }).localCa, true)

  const before = readFileSync(file)
  const again = await runCli(['site', 'init', '--no-input', '--name', 'other'], { env, cwd: root })
  assert.equal(again.code, 1)
  assert.match(again.stderr, /exists; use --force/)
  assert.deepEqual(readFileSync(file), before)
  const bad = await runCli(['site', 'init', '--no-input', '--config', join(root, 'b.yaml'), '--level', '9'], {
    env,
    cwd: root,
  })
  assert.equal(bad.code, 64)
  assert.match(bad.stderr, /--level "9": a Purdue level 0-5/)
})

const hasPty = spawnSync('python3', ['-c', 'import pty'], { stdio: 'ignore' }).status === 0

test(
  'site init asks on a terminal, re-asks an invalid answer, and keeps defaults on Enter',
  { skip: hasPty ? undefined : 'python3 pty missing' },
  async (t) => {
    const root = tmpDir(t)
    const file = join(root, 'site.yaml')
    const state = join(root, 'state')
    // A pseudo-terminal driven by python3: each answer is sent after its prompt appears.
    const driver = `
import os, pty, sys, select, time
answers = [("Site name [", "line-9"), ("(0-5) [", "7"), ("(0-5) [", "1"), ("(empty: none yet)", ""),
           ("space separated) [", ""), ("State directory [", sys.argv[2]), ("(y/n) [", "n")]
pid, fd = pty.fork()
if pid == 0:
    os.execv("${process.execPath}", ["node", "${AGENT_MAIN}", "site", "init", "--config", sys.argv[1]])
out = b""
deadline = time.time() + 60
seen = {}
for marker, answer in answers:
    seen[marker] = seen.get(marker, 0) + 1
    while out.count(marker.encode()) < seen[marker] and time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try: out += os.read(fd, 4096)
            except OSError: break
    os.write(fd, answer.encode() + b"\\r")
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 1)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError: break
        if not chunk: break
        out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.WEXITSTATUS(status))
`
    const r = spawnSync('python3', ['-c', driver, file, state], { encoding: 'utf8', timeout: 90_000 })
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`)
    assert.match(r.stdout, /a Purdue level 0-5/, 'the invalid level was refused and asked again')
    const config = parse(readFileSync(file, 'utf8')) as Record<string, any>
    assert.deepEqual(config['site'], { name: 'line-9', level: 1 })
    assert.deepEqual(
      config['broker'].listeners,
      [{ protocol: 'mqtt', host: '0.0.0.0', port: 1883 }],
      'Enter kept the default listener',
    )
    assert.equal(config['dataDir'], state)
    assert.equal(config['upstreams'].length, 0)
    assert.ok(existsSync(state))
    assert.equal(existsSync(join(state, 'certs')), false, 'no CA when declined')
  },
)

test('device add issues a certificate and joins a group; list shows it; remove revokes it', async (t) => {
  const dir = tmpDir(t)
  const file = siteFile(
    dir,
    `${SITE}devices:\n  groups:\n    # presses report to the line\n    - name: presses\n      members: [press-1]\n      publish: ['line/3/#']\n`,
  )
  assert.equal((await runCli(['certs', 'init', '-c', file])).code, 0)
  const out = join(dir, 'prov')
  const add = await runCli(['device', 'add', 'press-7', '--group', 'presses', '--out', out, '-c', file])
  assert.equal(add.code, 0, add.stderr)
  assert.ok(existsSync(join(out, 'press-7.crt')) && existsSync(join(out, 'press-7.key')))
  const text = readFileSync(file, 'utf8')
  assert.ok(text.includes('# presses report to the line'))
  assert.deepEqual((parse(text) as Record<string, any>)['devices'].groups[0].members, ['press-1', 'press-7'])
  const list = await runCli(['device', 'list', '--json', '-c', file])
  assert.deepEqual(
    (JSON.parse(list.stdout) as { id: string; status: string; groups: string[] }[]).map((d) => [
      d.id,
      d.status,
      d.groups,
    ]),
    [['press-7', 'valid', ['presses']]],
  )
  const rm = await runCli(['device', 'remove', 'press-7', '-c', file])
  assert.equal(rm.code, 0, rm.stderr)
  assert.deepEqual((parse(readFileSync(file, 'utf8')) as Record<string, any>)['devices'].groups[0].members, ['press-1'])
  const after = await runCli(['device', 'list', '--json', '-c', file])
  assert.equal((JSON.parse(after.stdout) as { status: string }[])[0]?.status, 'revoked')
})
