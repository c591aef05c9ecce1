"""The agent's copies of uploaded images: fetched by digest, verified, kept in its state dir.

`<state-dir>/images/sha256/<hex>` holds the bytes whose sha256 is <hex>, nothing else:
- fetched the first time an instance on this host needs them, into a temporary
  file in the same directory, hashed as they arrive, renamed into place only if
  the hash is the digest (so a half-written or wrong file is never at the
  name);
- checked again each time an instance starts from them, because a copy on
  disk can be damaged or replaced after it was fetched (hashing costs ~0.04 ms
  for a 16 KiB guest, ~0.2 s at the 32 MiB limit, on the development host).
Bytes that do not match, from the store or from the disk, are refused and
removed, and the start fails with the reason: the scheduler then retries the
build on another host (scheduler/build.py) and the next build here fetches
afresh. A store that cannot be reached fails the start the same way.

The source of the bytes is a function (digest -> chunks), so this module does
not know etcd: the agent wires it to computed/store/image_blobs.read_chunks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable

from computed.store.errors import StoreError
from computed.store.image_blobs import MAX_IMAGE_BYTES, BlobMissing
from computed.store.keys import digest_hex

ChunkSource = Callable[[str], Iterable[bytes]]
_READ = 1 << 20


class ImageFetchError(Exception):
    """This host cannot provide the image's bytes; the message says why (it becomes the fault)."""


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ):
            h.update(block)
    return "sha256:" + h.hexdigest()


class ImageCache:
    def __init__(self, state_dir: str, source: ChunkSource) -> None:
        self.directory = os.path.join(state_dir, "images", "sha256")
        self.source = source
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def path(self, digest: str) -> str:
        """Where the copy of `digest` lives (whether or not it is there)."""
        return os.path.join(self.directory, digest_hex(digest))

    def ensure(self, digest: str) -> str:
        """The path of a verified local copy of `digest`, fetching it if needed."""
        try:
            path = self.path(digest)
        except ValueError as e:
            raise ImageFetchError(str(e)) from None
        with self._lock_for(digest):
            if os.path.exists(path):
                self._check_cached(digest, path)
                return path
            self._fetch(digest, path)
            return path

    def _lock_for(self, digest: str) -> threading.Lock:
        """One fetch per digest at a time: instances starting together share it."""
        with self._locks_lock:
            return self._locks.setdefault(digest, threading.Lock())

    def _check_cached(self, digest: str, path: str) -> None:
        try:
            actual = file_digest(path)
        except OSError as e:
            raise ImageFetchError(f"cannot read the cached image {digest}: {e}") from None
        if actual != digest:
            _remove(path)
            raise ImageFetchError(
                f"image {digest}: the copy cached on this host does not match its digest "
                f"(it hashes to {actual}); refused and removed, the next build here fetches it "
                "again"
            )

    def _fetch(self, digest: str, path: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".fetch-")
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as f:
                for chunk in self.source(digest):
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise ImageFetchError(
                            f"image {digest}: the store holds more than "
                            f"{MAX_IMAGE_BYTES >> 20} MiB for it; refused"
                        )
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            got = "sha256:" + h.hexdigest()
            if got != digest:
                raise ImageFetchError(
                    f"image {digest}: the bytes received from the image store do not match "
                    f"its digest (they hash to {got}); refused"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        except BlobMissing as e:
            _remove(tmp)
            raise ImageFetchError(str(e)) from None
        except StoreError as e:
            _remove(tmp)
            raise ImageFetchError(f"cannot fetch image {digest} from the store: {e}") from None
        except OSError as e:
            _remove(tmp)
            raise ImageFetchError(f"cannot write image {digest} to {self.directory}: {e}") from None
        except BaseException:
            _remove(tmp)
            raise


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
