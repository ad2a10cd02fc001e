"""The archive of a decommissioned hub, as a file: one ``tar.gz`` holding the hub's JupyterHub database, every hub
user's home and a ``manifest.json`` that lists them.

Layout (``FORMAT`` 1)::

    manifest.json           {"format", "hub", "created_at", "database": {"name", "bytes", "sha256"},
                             "users": [{"name", "bytes", "files"}]}
    jupyterhub.sqlite       a consistent copy of the hub's database
    homes/<name>/...        each user's home, under the user's JupyterHub name (not a system account's name, which
                            belongs to one hub directory and means nothing to the hub it is restored into)

The manifest comes first, so reading it costs one member.  The file is written under a temporary name (mode 0600)
and renamed when complete: an archive that exists is whole.  Used by the local backend and by the test doubles; the
Kubernetes archive Job writes the same layout with ``tar`` (``clusters/k8s_manifests.py:archive_job``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path

from clusters.base import ArchiveResult, BackendError

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "jupyterhub.sqlite"
HOMES = "homes"
SUFFIX = ".tar.gz"


def sha256_of(path: Path | str) -> str:
    """The sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tree(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``path``, symlinks not followed."""
    size = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            entry = Path(root) / name
            if entry.is_file() and not entry.is_symlink():
                size += entry.stat().st_size
                files += 1
    return size, files


def write(path: Path, hub: str, database: Path, homes: dict[str, Path | None]) -> ArchiveResult:
    """Write the archive of hub ``hub`` to ``path``: ``database`` (a file) and ``homes`` ({JupyterHub name: home
    directory, or None for a user who never had one}).  Returns its :class:`ArchiveResult` (``location`` the path).

    The directory is made mode 0700, the file 0600.  Raises :class:`BackendError` when something cannot be read;
    no partial file is left then.  Safe to call twice (the archive is written afresh).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    users = []
    for name, home in sorted(homes.items()):
        size, files = _tree(home) if home is not None and home.is_dir() else (0, 0)
        users.append({"name": name, "bytes": size, "files": files})
    manifest = {"format": FORMAT, "hub": hub,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "database": {"name": DATABASE, "bytes": database.stat().st_size, "sha256": sha256_of(database)},
                "users": users}
    partial = path.with_name(path.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now().timestamp())
            tar.addfile(info, io.BytesIO(data))
            tar.add(database, arcname=DATABASE)
            for name, home in sorted(homes.items()):
                if home is not None and home.is_dir():
                    tar.add(home, arcname=f"{HOMES}/{name}")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackendError(f"could not write the archive {path.name}: {exc.strerror or exc}") from None
    return ArchiveResult(location=str(path), size=path.stat().st_size, sha256=sha256_of(path), manifest=manifest)


def open_checked(path: Path | str, sha256: str | None = None) -> tarfile.TarFile:
    """The archive at ``path`` opened for reading, after checking its sha256 against ``sha256`` (when given).
    Raises :class:`BackendError` for a missing or altered file."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"the archive {path.name} does not exist")
    if sha256 is not None and sha256_of(path) != sha256:
        raise BackendError(f"the archive {path.name} does not match its recorded sha256: it was altered or damaged")
    return tarfile.open(path, mode="r:gz")


def manifest_of(tar: tarfile.TarFile) -> dict:
    """The manifest of an open archive; :class:`BackendError` when it has none."""
    member = tar.extractfile(MANIFEST) if MANIFEST in tar.getnames() else None
    if member is None:
        raise BackendError("the archive holds no manifest.json: it is not a hub archive")
    return json.loads(member.read())


def extract_database(tar: tarfile.TarFile, target: Path) -> None:
    """Write the archive's database to ``target`` (mode 0600), checking it against the manifest's sha256."""
    member = tar.extractfile(DATABASE)
    if member is None:
        raise BackendError("the archive holds no database")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := member.read(1 << 20):
            out.write(chunk)
    if sha256_of(target) != manifest_of(tar)["database"]["sha256"]:
        target.unlink()
        raise BackendError("the archive's database does not match the sha256 its manifest records")


def extract_home(tar: tarfile.TarFile, name: str, target: Path, uid: int | None = None,
                 gid: int | None = None) -> int:
    """Extract the home of user ``name`` into the directory ``target`` (which exists), owned by ``uid``/``gid``
    when given; returns how many files it holds.  Members are extracted with tarfile's "data" filter: nothing lands
    outside ``target`` and no device, setuid bit or absolute link is made."""
    prefix = f"{HOMES}/{name}/"
    members = []
    for member in tar.getmembers():
        if member.name.startswith(prefix):
            member = member.replace(name=member.name[len(prefix):], deep=False)
            if member.linkname and member.islnk():
                member = member.replace(linkname=member.linkname[len(prefix):], deep=False)
            members.append(member)
    tar.extractall(target, members=members, filter="data")
    if uid is not None:
        for root, dirs, files in os.walk(target):
            for entry in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                os.lchown(entry, uid, gid)
    target.chmod(0o700)
    return sum(1 for member in members if member.isfile())
