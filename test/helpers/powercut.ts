// A disk that loses power on command: mounts test/helpers/powercut_fs.py (a
// FUSE filesystem that keeps unsynced writes in memory only) and drives it.
//
//   const disk = await PowerCutDisk.create(t)     // mounted, empty
//   ... run the agent with its dataDir under disk.path ...
//   process.kill(agent.pid, 'SIGKILL'); await agent.exited
//   await disk.cut()                               // everything unsynced is gone
//   await disk.mount()                             // what a rebooted device would find
//
// The filesystem process holds the "disk" in memory; a cut writes its durable
// state to an image file and exits, the next mount starts from that image.
// Everything is unmounted and removed after the test, pass or fail.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Scope } from './scope.js'
import { withTimeout } from './wait.js'

const FS_SCRIPT = resolve(import.meta.dirname, 'powercut_fs.py')
const PYTHON = '/usr/bin/python3'

let support: Promise<string | null> | undefined

/**
 * null if FUSE power-cut tests can run here, else why not (for `t.skip(reason)`).
 * Probes once per process with a real mount, so a container without the
 * right to mount says so instead of failing every test.
 */
export function powerCutUnsupported(): Promise<string | null> {
  support ??= probe()
  return support
}

async function probe(): Promise<string | null> {
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse on this machine: power-cut tests need FUSE'
  if (spawnSync('fusermount3', ['-V']).status !== 0) return 'fusermount3 missing (Debian package fuse3)'
  if (spawnSync(PYTHON, ['-c', 'import fusepy']).status !== 0)
    return `${PYTHON} cannot import fusepy (Debian package python3-fusepy)`
  const root = mkdtempSync(join(tmpdir(), 'edge-powercut-probe-'))
  const disk = new PowerCutDisk(root)
  try {
    await disk.mount()
    await disk.unmount()
    return null
  } catch (err) {
    return `a FUSE mount does not work here: ${(err as Error).message}`
  } finally {
    await disk.destroy()
  }
}

export class PowerCutDisk {
  /** The mount point: put the agent's dataDir below it. */
  readonly path: string
  /** The durable state between mounts (on the real disk). */
  readonly image: string
  #proc: ChildProcess | null = null
  #exited: Promise<unknown> = Promise.resolve()
  #out = ''
  #err = ''
  #cuts = 0

  constructor(readonly root: string) {
    this.path = join(root, 'mnt')
    this.image = join(root, 'disk.img')
    mkdirSync(this.path, { recursive: true })
  }

  /** A mounted, empty disk, unmounted and removed after the test. */
  static async create(t: Scope): Promise<PowerCutDisk> {
    const disk = new PowerCutDisk(mkdtempSync(join(tmpdir(), 'edge-powercut-')))
    t.after(() => disk.destroy())
    await disk.mount()
    return disk
  }

  get mounted(): boolean {
    return this.#proc !== null
  }

  get cuts(): number {
    return this.#cuts
  }

  /**
   * Mount from the image. cutAfterOps: the filesystem cuts by itself at that
   * mutating operation (then await `cutDone()`). durableMetadata: names are
   * durable at once, data at fsync (a journaling file system; see powercut_fs.py).
   */
  async mount(opts: { cutAfterOps?: number; durableMetadata?: boolean } = {}): Promise<void> {
    if (this.#proc !== null) throw new Error('already mounted')
    const args = ['-W', 'ignore', FS_SCRIPT, this.path, this.image]
    if (opts.cutAfterOps !== undefined) args.push('--cut-after-ops', String(opts.cutAfterOps))
    if (opts.durableMetadata === true) args.push('--durable-metadata')
    const proc = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    this.#proc = proc
    this.#out = ''
    this.#err = ''
    this.#exited = once(proc, 'exit')
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (this.#out += d))
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (this.#err += d))
    // A test process that dies leaves no mount process behind: EOF on stdin is a cut.
    const reap = (): void => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    }
    process.once('exit', reap)
    void this.#exited.then(() => process.off('exit', reap))
    try {
      await withTimeout(
        new Promise<void>((res, rej) => {
          const check = (): void => {
            if (this.#out.includes('ready\n')) res()
          }
          proc.stdout.on('data', check)
          void this.#exited.then(() => rej(new Error(`powercut fs exited at mount: ${this.#err.trim()}`)))
          check()
        }),
        15_000,
        'the powercut filesystem to mount',
      )
    } catch (err) {
      await this.#forceDown()
      throw err
    }
  }

  /** The power cut: whatever was not fsync'd is lost. Kill the writers first. */
  async cut(): Promise<void> {
    const proc = this.#proc
    if (proc === null) throw new Error('not mounted')
    if (proc.exitCode === null) proc.stdin?.write('cut\n')
    await this.cutDone()
  }

  /** Waits for a cut (asked for, or by --cut-after-ops) and detaches the dead mount. */
  async cutDone(ms = 60_000): Promise<void> {
    await withTimeout(this.#exited, ms, 'the powercut filesystem to cut')
    if (!this.#out.includes('cut\n')) throw new Error(`powercut fs exited without a cut: ${this.#err.trim()}`)
    this.#cuts++
    this.#proc = null
    this.#detach()
  }

  /** Whether the filesystem cut by itself (cutAfterOps reached). */
  get cutHappened(): boolean {
    return this.#out.includes('cut\n')
  }

  /** Clean shutdown: everything written is kept (like `sync; poweroff`). */
  async unmount(): Promise<void> {
    if (this.#proc === null) return
    const r = spawnSync('fusermount3', ['-u', this.path], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`fusermount3 -u ${this.path}: ${r.stderr.trim()}`)
    await withTimeout(this.#exited, 30_000, 'the powercut filesystem to exit after unmount')
    this.#proc = null
  }

  /** mutating operations, fsyncs and directory fsyncs since this mount. */
  async stats(): Promise<{ ops: number; fsyncs: number; fsyncdirs: number }> {
    const proc = this.#proc
    if (proc === null) throw new Error('not mounted')
    const before = this.#out.length
    proc.stdin?.write('stats\n')
    const line = await withTimeout(
      new Promise<string>((res) => {
        const check = (): void => {
          const m = /stats (\d+) (\d+) (\d+)\n/.exec(this.#out.slice(before))
          if (m) res(m[0])
        }
        proc.stdout?.on('data', check)
        check()
      }),
      10_000,
      'powercut fs stats',
    )
    const [, ops, fsyncs, fsyncdirs] = line.trim().split(' ').map(Number)
    return { ops: ops ?? 0, fsyncs: fsyncs ?? 0, fsyncdirs: fsyncdirs ?? 0 }
  }

  /** Unmount whatever state it is in and remove everything (idempotent). */
  async destroy(): Promise<void> {
    await this.#forceDown()
    rmSync(this.root, { recursive: true, force: true })
  }

  async #forceDown(): Promise<void> {
    const proc = this.#proc
    this.#proc = null
    if (proc !== null && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await withTimeout(this.#exited, 10_000, 'the powercut filesystem to die').catch(() => undefined)
    }
    this.#detach()
  }

  #detach(): void {
    // -z: the filesystem process is gone; detach the dead mount even if busy.
    if (isMounted(this.path)) spawnSync('fusermount3', ['-u', '-z', this.path])
  }
}

function isMounted(path: string): boolean {
  const r = spawnSync('findmnt', ['-n', path])
  return r.status === 0
}
