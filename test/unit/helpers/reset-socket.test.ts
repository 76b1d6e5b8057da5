// resetSocket exists because of a Node 20 exit hang (see its header): a child
// process ends a connection and resets it in the same tick, then has nothing
// left to do. It must exit (with a bare resetAndDestroy() it spins until killed).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'

const HELPER = pathToFileURL(fileURLToPath(new URL('../../helpers/reset-socket.ts', import.meta.url))).href

function endThenReset(): Promise<{ code: number | null; killed: boolean }> {
  const code = `
    const net = await import('node:net')
    const { resetSocket } = await import(${JSON.stringify(HELPER)})
    const server = net.createServer((s) => { s.on('error', () => {}); s.resume() })
    server.listen(0, '127.0.0.1', () => {
      const c = net.connect(server.address().port, '127.0.0.1', () => {
        c.on('error', () => {})
        c.end()
        process.nextTick(() => {
          resetSocket(c)
          server.close()
          server.unref()
        })
      })
    })
  `
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env['NODE_OPTIONS']
  delete env['NODE_TEST_CONTEXT']
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', code],
      { env, timeout: 20_000, killSignal: 'SIGKILL' },
      (err) =>
        resolve({
          code: err === null ? 0 : typeof err.code === 'number' ? err.code : null,
          killed: err?.killed ?? false,
        }),
    )
  })
}

test('a connection reset while its shutdown is in flight lets the process exit', async () => {
  assert.deepEqual(await endThenReset(), { code: 0, killed: false })
})
