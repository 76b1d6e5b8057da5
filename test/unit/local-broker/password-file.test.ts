// The password file: Mosquitto's format read as mosquitto_passwd writes it,
// our own hashes, and the lines it refuses.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  PasswordFile,
  PasswordFileError,
  hashPassword,
  usernameProblem,
} from '../../../src/local-broker/password-file.js'

// Written by Debian's mosquitto_passwd 2.0.11 (alice: default $7$; bob: -H sha512).
const MOSQUITTO = [
  '# a comment',
  'alice:$7$101$qkXUURny257Nudtx$peButU4q50ZqNxA1Fa6mM1vw9CX0HPAXJ8zLK84v32p2tfA98fNbeMjAMkbOAE0IQ7r7T1TgYfdzeua7JLyFPA==',
  '',
  'bob:$6$2dAu66npN+lFxzo5$GHyMn260I5y2UbrCK3kn1vBBUP2B0n8BQHo8qjM6X1lsbf/9zueiPlD8EFJY3qDaTUwi6H5l7agPV/ipkomkCA==',
].join('\n')

test("verifies mosquitto_passwd's $7$ and $6$ lines", async () => {
  const f = PasswordFile.parse(MOSQUITTO)
  assert.equal(f.size, 2)
  assert.equal(await f.verify('alice', Buffer.from('secret1')), true)
  assert.equal(await f.verify('alice', Buffer.from('secret2')), false)
  assert.equal(await f.verify('bob', Buffer.from('secret2')), true)
  assert.equal(await f.verify('bob', Buffer.from('secret1')), false)
  assert.equal(await f.verify('carol', Buffer.from('secret1')), false)
})

test('writes $7$ hashes that verify, keeps other users and serializes one line each', async () => {
  const f = await PasswordFile.parse(MOSQUITTO).withPassword('carol', Buffer.from('pw'))
  assert.match(f.serialize(), /^alice:\$7\$101\$.*\nbob:\$6\$.*\ncarol:\$7\$210000\$[^$]+\$[^$]+\n$/)
  assert.equal(await f.verify('carol', Buffer.from('pw')), true)
  const again = PasswordFile.parse(f.serialize())
  assert.equal(await again.verify('carol', Buffer.from('pw')), true)
  assert.equal(again.without('alice').has('alice'), false)
  assert.match(await hashPassword(Buffer.from('x'), 1000), /^\$7\$1000\$/)
})

test('refuses plain-text passwords, unknown hash types, duplicates and bad base64, naming the line', () => {
  const bad: [string, RegExp][] = [
    ['alice:secret', /line 1.*not a \$6\$ or \$7\$ hash/],
    ['alice:$2b$10$abc', /line 1.*unknown hash type/],
    ['# c\nalice:$7$101$!!!$abc', /line 2.*base64/],
    [
      'alice:$7$0$qkXUURny257Nudtx$peButU4q50ZqNxA1Fa6mM1vw9CX0HPAXJ8zLK84v32p2tfA98fNbeMjAMkbOAE0IQ7r7T1TgYfdzeua7JLyFPA==',
      /iteration/,
    ],
    [`${MOSQUITTO.split('\n')[1]}\n${MOSQUITTO.split('\n')[1]}`, /appears twice/],
    ['nocolon', /expected username:hash/],
  ]
  for (const [text, re] of bad) {
    assert.throws(
      () => PasswordFile.parse(text),
      (e: unknown) =>
        e instanceof PasswordFileError && e.code === 'EDGE_ERR_BROKER_PASSWORD_FILE' && re.test(e.message),
      text,
    )
  }
})

test('user names: no colon, no control characters, not empty', () => {
  assert.equal(usernameProblem('plc-gw-1'), undefined)
  assert.ok(usernameProblem('a:b'))
  assert.ok(usernameProblem(''))
  assert.ok(usernameProblem('a\u0001b'))
  assert.ok(usernameProblem('a\u0085b'))
})
