#!/usr/bin/python3
"""A FUSE filesystem that forgets, on command, everything nobody synced.

Used by the power-cut tests (test/helpers/powercut.ts). It keeps two states
of every file and directory in memory:

- the current state, which every read sees (what the page cache of a real
  kernel would hold), and
- the durable state, which is what a disk would still hold after a power cut.

What becomes durable, and when (the minimum POSIX promises, so that a test
passing here does not rely on a lenient filesystem):
- a file's data, size and mode: at fsync/fdatasync of that file;
- a directory's entries (create, mkdir, rename, unlink, rmdir): at fsync of
  that directory. A file created and fsync'd, but whose directory was never
  fsync'd, is gone after a cut; a rename not followed by an fsync of the
  directory is undone.

Commands, one per line on stdin (answers on stdout):
  cut      the power cut: the durable state is written to IMAGE, then the
           process exits at once without unmounting (the mount is left
           disconnected; the caller detaches it with fusermount3 -u -z).
  stats    'stats <mutating ops> <fsyncs> <fsyncdirs>'.
EOF on stdin is a cut as well (the test process died), and the mount is
detached here since nobody else will.
A clean unmount (fusermount3 -u) is a clean shutdown: the current state is
written to IMAGE, as `sync` before a power-off would.

--durable-metadata: a second model, of a journaling file system that
commits its metadata in order (ext4 data=ordered between two commits):
every create, mkdir, rename, unlink is durable at once, file data still
only at fsync. It finds what the strict model cannot: a rename that landed
before the data it names, and the state between two renames.

--cut-after-ops N: cut by itself at the N-th mutating operation, before it
takes effect (the caller that made it sees ENOTCONN). Lets a test cut at an
exact point inside a sequence of file operations.

The mount does not use direct_io, so the kernel page cache sits on top and
shared writable mmap works (SQLite's WAL index, the -shm file).

usage: powercut_fs.py MOUNTPOINT IMAGE [--cut-after-ops N] [--durable-metadata]
"""
import errno
import os
import pickle
import stat
import subprocess
import sys
import threading
import time

import fusepy as fuse  # Debian's python3-fusepy names the module fusepy
from fusepy import FUSE, FuseOSError, Operations


class Node:
    __slots__ = ('kind', 'mode', 'uid', 'gid', 'data', 'entries', 'mtime', 'ctime',
                 'd_data', 'd_mode', 'd_entries')

    def __init__(self, kind, mode, uid=0, gid=0):
        self.kind = kind  # 'f' or 'd'
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.data = bytearray() if kind == 'f' else None
        self.entries = {} if kind == 'd' else None
        self.mtime = self.ctime = time.time()
        # durable state: None = nothing durable yet
        self.d_data = b'' if kind == 'f' else None
        self.d_mode = mode
        self.d_entries = {} if kind == 'd' else None


ROOT = 1


class PowerCutFs(Operations):
    use_ns = False

    def __init__(self, image, cut_after_ops, durable_metadata=False):
        self.durable_metadata = durable_metadata
        self.image = image
        self.mutex = threading.RLock()
        self.nodes = {}
        self.next_ino = ROOT
        self.fhs = {}
        self.next_fh = 1
        self.ops = 0
        self.fsyncs = 0
        self.fsyncdirs = 0
        self.cut_after_ops = cut_after_ops
        self.cut_done = False
        self._load()

    # ---- image -------------------------------------------------------------
    def _load(self):
        if os.path.exists(self.image):
            with open(self.image, 'rb') as f:
                saved = pickle.load(f)
            for ino, (kind, mode, uid, gid, content) in saved.items():
                n = Node(kind, mode, uid, gid)
                if kind == 'f':
                    n.data = bytearray(content)
                    n.d_data = bytes(content)
                else:
                    n.entries = dict(content)
                    n.d_entries = dict(content)
                self.nodes[ino] = n
                self.next_ino = max(self.next_ino, ino + 1)
        else:
            self.nodes[ROOT] = Node('d', stat.S_IFDIR | 0o755)
            self.next_ino = ROOT + 1

    def _save(self, durable):
        """Write the durable (or the current) state reachable from the root."""
        out = {}
        todo = [ROOT]
        while todo:
            ino = todo.pop()
            if ino in out or ino not in self.nodes:
                continue
            n = self.nodes[ino]
            if n.kind == 'f':
                content = n.d_data if durable else bytes(n.data)
            else:
                content = dict(n.d_entries if durable else n.entries)
                todo.extend(content.values())
            mode = n.d_mode if durable else n.mode
            out[ino] = (n.kind, mode, n.uid, n.gid, content)
        tmp = self.image + '.tmp'
        with open(tmp, 'wb') as f:
            pickle.dump(out, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.image)

    def cut(self):
        with self.mutex:
            if self.cut_done:
                return
            self.cut_done = True
            self._save(durable=True)
            sys.stdout.write('cut\n')
            sys.stdout.flush()
            os._exit(0)

    # ---- helpers -----------------------------------------------------------
    def _meta(self, *dirs):
        if self.durable_metadata:
            for ino in dirs:
                n = self.nodes[ino]
                n.d_entries = dict(n.entries)

    def _mutating(self):
        self.ops += 1
        if self.cut_after_ops is not None and self.ops >= self.cut_after_ops:
            self.cut()

    def _lookup(self, path):
        ino = ROOT
        for part in [p for p in path.split('/') if p]:
            n = self.nodes[ino]
            if n.kind != 'd':
                raise FuseOSError(errno.ENOTDIR)
            if part not in n.entries:
                raise FuseOSError(errno.ENOENT)
            ino = n.entries[part]
        return ino

    def _parent(self, path):
        head, name = os.path.split(path.rstrip('/'))
        pino = self._lookup(head or '/')
        if self.nodes[pino].kind != 'd':
            raise FuseOSError(errno.ENOTDIR)
        return pino, name

    def _ino(self, path, fh):
        if fh is not None and fh in self.fhs:
            return self.fhs[fh]
        return self._lookup(path)

    def _new(self, kind, mode):
        ino = self.next_ino
        self.next_ino += 1
        uid, gid, _ = fuse.fuse_get_context()
        self.nodes[ino] = Node(kind, mode, uid, gid)
        return ino

    def _gc(self, ino):
        # An unlinked node stays while a handle holds it (POSIX open-unlink).
        if ino in self.fhs.values():
            return
        for n in self.nodes.values():
            if n.kind == 'd' and (ino in n.entries.values() or ino in n.d_entries.values()):
                return
        self.nodes.pop(ino, None)

    # ---- metadata ----------------------------------------------------------
    def getattr(self, path, fh=None):
        with self.mutex:
            ino = self._ino(path, fh)
            n = self.nodes[ino]
            size = len(n.data) if n.kind == 'f' else 4096
            return dict(st_mode=n.mode, st_nlink=2 if n.kind == 'd' else 1, st_size=size,
                        st_uid=n.uid, st_gid=n.gid, st_mtime=n.mtime, st_ctime=n.ctime,
                        st_atime=n.mtime, st_blocks=(size + 511) // 512, st_blksize=4096)

    def statfs(self, path):
        blocks = 1 << 22  # 16 GiB of 4 KiB blocks
        used = sum(len(n.data) for n in self.nodes.values() if n.kind == 'f') // 4096
        return dict(f_bsize=4096, f_frsize=4096, f_blocks=blocks, f_bfree=blocks - used,
                    f_bavail=blocks - used, f_files=1 << 20, f_ffree=(1 << 20) - len(self.nodes),
                    f_favail=(1 << 20) - len(self.nodes), f_namemax=255)

    def chmod(self, path, mode):
        with self.mutex:
            self._mutating()
            n = self.nodes[self._lookup(path)]
            n.mode = (n.mode & ~0o7777) | (mode & 0o7777)
            n.ctime = time.time()

    def chown(self, path, uid, gid):
        with self.mutex:
            self._mutating()
            n = self.nodes[self._lookup(path)]
            if uid != -1 and uid != 0xFFFFFFFF:
                n.uid = uid
            if gid != -1 and gid != 0xFFFFFFFF:
                n.gid = gid

    def utimens(self, path, times=None):
        with self.mutex:
            n = self.nodes[self._lookup(path)]
            n.mtime = times[1] if times else time.time()

    def access(self, path, amode):
        with self.mutex:
            self._lookup(path)
            return 0

    # ---- directories -------------------------------------------------------
    def readdir(self, path, fh):
        with self.mutex:
            n = self.nodes[self._lookup(path)]
            return ['.', '..'] + list(n.entries.keys())

    def mkdir(self, path, mode):
        with self.mutex:
            pino, name = self._parent(path)
            if name in self.nodes[pino].entries:
                raise FuseOSError(errno.EEXIST)
            self._mutating()
            ino = self._new('d', stat.S_IFDIR | (mode & 0o7777))
            self.nodes[pino].entries[name] = ino
            self._meta(pino)

    def rmdir(self, path):
        with self.mutex:
            pino, name = self._parent(path)
            ino = self._lookup(path)
            if self.nodes[ino].kind != 'd':
                raise FuseOSError(errno.ENOTDIR)
            if self.nodes[ino].entries:
                raise FuseOSError(errno.ENOTEMPTY)
            self._mutating()
            del self.nodes[pino].entries[name]
            self._meta(pino)
            self._gc(ino)

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            self._mutating()
            self.fsyncdirs += 1
            n = self.nodes[self._lookup(path)]
            n.d_entries = dict(n.entries)
            n.d_mode = n.mode
            return 0

    # ---- files -------------------------------------------------------------
    def create(self, path, mode, fi=None):
        with self.mutex:
            pino, name = self._parent(path)
            parent = self.nodes[pino]
            if name in parent.entries:
                ino = parent.entries[name]
            else:
                self._mutating()
                ino = self._new('f', stat.S_IFREG | (mode & 0o7777))
                parent.entries[name] = ino
                self._meta(pino)
            return self._open_fh(ino)

    def open(self, path, flags):
        with self.mutex:
            return self._open_fh(self._lookup(path))

    def _open_fh(self, ino):
        fh = self.next_fh
        self.next_fh += 1
        self.fhs[fh] = ino
        return fh

    def release(self, path, fh):
        with self.mutex:
            ino = self.fhs.pop(fh, None)
            if ino is not None:
                self._gc(ino)
            return 0

    def flush(self, path, fh):
        return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            n = self.nodes[self._ino(path, fh)]
            return bytes(n.data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self.mutex:
            self._mutating()
            n = self.nodes[self._ino(path, fh)]
            end = offset + len(data)
            if len(n.data) < offset:
                n.data.extend(b'\0' * (offset - len(n.data)))
            n.data[offset:end] = data
            n.mtime = time.time()
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            self._mutating()
            n = self.nodes[self._ino(path, fh)]
            if length < len(n.data):
                del n.data[length:]
            else:
                n.data.extend(b'\0' * (length - len(n.data)))
            n.mtime = time.time()

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self._mutating()
            self.fsyncs += 1
            n = self.nodes[self._ino(path, fh)]
            n.d_data = bytes(n.data)
            n.d_mode = n.mode
            return 0

    def unlink(self, path):
        with self.mutex:
            pino, name = self._parent(path)
            ino = self._lookup(path)
            if self.nodes[ino].kind == 'd':
                raise FuseOSError(errno.EISDIR)
            self._mutating()
            del self.nodes[pino].entries[name]
            self._meta(pino)
            self._gc(ino)

    def rename(self, old, new):
        with self.mutex:
            opino, oname = self._parent(old)
            npino, nname = self._parent(new)
            ino = self._lookup(old)
            target = self.nodes[npino].entries.get(nname)
            if target is not None and target != ino:
                tn = self.nodes[target]
                if tn.kind == 'd' and tn.entries:
                    raise FuseOSError(errno.ENOTEMPTY)
            self._mutating()
            del self.nodes[opino].entries[oname]
            self.nodes[npino].entries[nname] = ino
            self._meta(opino, npino)
            if target is not None and target != ino:
                self._gc(target)

    def init(self, path):
        sys.stdout.write('ready\n')
        sys.stdout.flush()

    def destroy(self, path):
        with self.mutex:
            if not self.cut_done:
                self._save(durable=False)


def commands(fs):
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == 'cut':
            fs.cut()
        elif cmd == 'stats':
            with fs.mutex:
                sys.stdout.write('stats %d %d %d\n' % (fs.ops, fs.fsyncs, fs.fsyncdirs))
                sys.stdout.flush()
    # The test process is gone: cut, then detach the mount (nobody else will).
    with fs.mutex:
        if not fs.cut_done:
            fs.cut_done = True  # destroy() must not save the current state now
            fs._save(durable=True)
    subprocess.run(['fusermount3', '-u', '-z', fs.mountpoint], check=False)
    os._exit(0)


def main():
    mountpoint, image = sys.argv[1], sys.argv[2]
    cut_after = None
    rest = sys.argv[3:]
    if '--cut-after-ops' in rest:
        cut_after = int(rest[rest.index('--cut-after-ops') + 1])
    fs = PowerCutFs(image, cut_after, '--durable-metadata' in rest)
    fs.mountpoint = mountpoint
    threading.Thread(target=commands, args=(fs,), daemon=True).start()
    FUSE(fs, mountpoint, foreground=True, nothreads=False, fsname='powercut', default_permissions=False)


if __name__ == '__main__':
    main()
