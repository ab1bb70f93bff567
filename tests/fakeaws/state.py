"""Persistent state of the emulator: snapshots (with their blocks) and images.

Layout under the state directory:

  snapshots/<snap-id>/meta.json    the snapshot's metadata (rewritten atomically)
  snapshots/<snap-id>/blocks/<i>   block i as a raw 524288-byte file
  snapshots/<snap-id>/blocks.idx   append-only journal "index sha256hex" per write;
                                   the last line for an index wins
  images.json                      every registered image, by image id

Blocks are never held in memory; only their SHA-256 digests are.
"""

import base64
import binascii
import hashlib
import json
import os
import secrets
import shutil
import threading
import time

BLOCK_SIZE = 524288
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
ACCOUNT = "123456789012"


def new_id(prefix):
    return prefix + secrets.token_hex(9)[:17]


def atomic_write_json(path, obj):
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Snapshot:
    def __init__(self, store, meta):
        self.store = store
        self.meta = meta
        self.id = meta["SnapshotId"]
        self.dir = os.path.join(store.root, "snapshots", self.id)
        self.blocks = {}            # index -> raw 32-byte sha256 (blocks written to this snapshot)
        self.last_activity = meta.get("LastActivity", meta["StartTime"])
        self._journal = None
        self.inflight = set()       # block indexes being written right now
        self._effective = None      # cache for completed snapshots

    # --- persistence -------------------------------------------------------
    def save(self):
        self.meta["LastActivity"] = self.last_activity
        atomic_write_json(os.path.join(self.dir, "meta.json"), self.meta)

    def load_blocks(self):
        path = os.path.join(self.dir, "blocks.idx")
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        try:
                            self.blocks[int(parts[0])] = binascii.unhexlify(parts[1])
                        except ValueError:
                            pass
        except FileNotFoundError:
            pass
        try:
            mt = os.path.getmtime(path)
            self.last_activity = max(self.last_activity, mt)
        except OSError:
            pass

    def block_path(self, index):
        return os.path.join(self.dir, "blocks", str(index))

    def record_block(self, index, digest):
        """Called with the store lock held, after the block file is in place."""
        if self._journal is None:
            self._journal = open(os.path.join(self.dir, "blocks.idx"), "a")
        self._journal.write("%d %s\n" % (index, digest.hex()))
        self._journal.flush()
        self.blocks[index] = digest
        self.last_activity = time.time()

    def close_journal(self):
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # --- state -------------------------------------------------------------
    def status(self):
        """The current status (pending, completed, error), applying the
        completion delay and the Timeout. Call with the store lock held."""
        m = self.meta
        if m["Status"] != "pending":
            return m["Status"]
        now = time.time()
        if m.get("CompleteAt") is not None:
            if not m.get("Stuck") and now >= m["CompleteAt"]:
                m["Status"] = "completed"
                m["Progress"] = 100
                self.close_journal()
                self.save()
        elif now - self.last_activity > m["Timeout"] * self.store.minute_seconds:
            self.fail("Snapshot timed out: no write for %d minutes" % m["Timeout"])
        return m["Status"]

    def fail(self, message):
        """Moves a pending snapshot to error. Lock held."""
        self.meta["Status"] = "error"
        self.meta["StatusMessage"] = message
        self.close_journal()
        self.save()

    def completing(self):
        return self.meta.get("CompleteAt") is not None

    def chain(self):
        """This snapshot and its ancestors, oldest first."""
        out = []
        s = self
        while s is not None:
            out.append(s)
            p = s.meta.get("ParentSnapshotId")
            s = self.store.snaps.get(p) if p else None
        out.reverse()
        return out

    def effective(self):
        """index -> (owner snapshot, digest) of every block the snapshot
        holds, its ancestors' included."""
        if self._effective is not None:
            return self._effective
        eff = {}
        for s in self.chain():
            for i, d in s.blocks.items():
                eff[i] = (s, d)
        if self.meta["Status"] == "completed":
            self._effective = eff
        return eff

    def block_token(self, index, owner, digest):
        """A token for one block, stamped with when it was issued."""
        raw = "%s.%d.%s.%s.%d" % (self.id, index, owner.id, digest[:9].hex(), int(time.time()))
        return base64.b64encode(raw.encode()).decode()

    def check_block_token(self, tok, index, owner, digest):
        """'ok', 'expired' (older than the store's token lifetime) or 'invalid'."""
        try:
            raw = base64.b64decode(tok.encode(), validate=True).decode()
            body, issued = raw.rsplit(".", 1)
            issued = int(issued)
        except (ValueError, UnicodeDecodeError):
            return "invalid"
        if body != "%s.%d.%s.%s" % (self.id, index, owner.id, digest[:9].hex()):
            return "invalid"
        return "expired" if time.time() - issued > self.store.token_lifetime else "ok"


class Store:
    def __init__(self, root, region="us-east-1", minute_seconds=60.0, complete_delay=0.0,
                 token_lifetime=7 * 24 * 3600.0, page_size=0):
        self.root = root
        self.page_size = page_size
        self.region = region
        self.minute_seconds = minute_seconds
        self.complete_delay = complete_delay
        self.token_lifetime = token_lifetime
        self.lock = threading.RLock()
        self.snaps = {}
        self.client_tokens = {}
        self.images = {}
        os.makedirs(os.path.join(root, "snapshots"), exist_ok=True)
        self._load()

    def _load(self):
        sdir = os.path.join(self.root, "snapshots")
        for name in sorted(os.listdir(sdir)):
            mpath = os.path.join(sdir, name, "meta.json")
            try:
                with open(mpath) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                continue
            s = Snapshot(self, meta)
            s.load_blocks()
            self.snaps[s.id] = s
            if meta.get("ClientToken"):
                self.client_tokens[meta["ClientToken"]] = s.id
        try:
            with open(os.path.join(self.root, "images.json")) as f:
                self.images = json.load(f)
        except (OSError, ValueError):
            self.images = {}

    def save_images(self):
        atomic_write_json(os.path.join(self.root, "images.json"), self.images)

    def get(self, snap_id, include_deleted=False):
        s = self.snaps.get(snap_id)
        if s is None or (s.meta.get("Deleted") and not include_deleted):
            return None
        return s

    def visible_snapshots(self):
        return [s for s in self.snaps.values() if not s.meta.get("Deleted")]

    def create_snapshot(self, meta):
        """meta without SnapshotId; returns the new Snapshot. Lock held."""
        sid = new_id("snap-")
        while sid in self.snaps:
            sid = new_id("snap-")
        meta["SnapshotId"] = sid
        s = Snapshot(self, meta)
        os.makedirs(os.path.join(s.dir, "blocks"), exist_ok=True)
        s.save()
        self.snaps[sid] = s
        if meta.get("ClientToken"):
            self.client_tokens[meta["ClientToken"]] = sid
        return s

    def write_block(self, snap, index, data, digest):
        """Writes the block file (outside the lock), then records it."""
        path = snap.block_path(index)
        tmp = "%s.tmp.%d" % (path, threading.get_ident())
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        with self.lock:
            snap.record_block(index, digest)

    def read_block(self, owner, index):
        with open(owner.block_path(index), "rb") as f:
            return f.read()

    def delete_snapshot(self, snap):
        """Removes the snapshot; its data stays while a child needs it. Lock held."""
        snap.meta["Deleted"] = True
        snap.close_journal()
        snap.save()
        if snap.meta.get("ClientToken"):
            self.client_tokens.pop(snap.meta["ClientToken"], None)
        self._collect()

    def _collect(self):
        needed = set()
        for s in self.snaps.values():
            if not s.meta.get("Deleted"):
                for a in s.chain():
                    needed.add(a.id)
        for sid in [sid for sid, s in self.snaps.items() if s.meta.get("Deleted") and sid not in needed]:
            shutil.rmtree(self.snaps[sid].dir, ignore_errors=True)
            del self.snaps[sid]


def linear_checksum(digests_in_order):
    h = hashlib.sha256()
    for d in digests_in_order:
        h.update(d)
    return base64.b64encode(h.digest()).decode()
