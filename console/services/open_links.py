"""Open in my hub: a link ``/open?repo=…&branch=…&path=…[&hub=…]`` that an instructor puts in a syllabus, and that
lands each person in one of their own hubs with the repository pulled there by nbgitpuller.

The link names content, not a hub: each person picks among the hubs they belong to (``memberships.my_hubs``), so
one link serves a course whose students are spread over several hubs and institutions.  Parsing the query and
building nbgitpuller's link are pure; :func:`choices` reads the person's hubs (two or three queries, no hub called).

nbgitpuller's link (``/hub/user-redirect/git-pull``) is followed by the hub: it logs the person in, and their server's
nbgitpuller extension clones the repository into ``<repo-dir>`` of their home (or merges into an earlier clone),
then opens ``urlpath``.  ``targetpath`` is given explicitly, so the folder is the one ``urlpath`` points into whatever
nbgitpuller's version would derive by itself (1.x keeps a trailing ``.git`` in it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import quote, urlencode, urlsplit

from console.extensions import db
from console.models import Hub, User
from console.services import FieldErrors
from console.services.hubs import SLUG_RE
from console.services.memberships import MyHub, my_hubs

MAX_REPO = 2000
MAX_BRANCH = 250
MAX_PATH = 1000
SCHEMES = ("https", "http")  # git's other transports run programs (ext::), read the server's disk (file://) or ssh
REPO_DIR_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # a folder name that is never '.', '..' or an option
# Characters git refuses in a ref name (git check-ref-format), besides spaces and control characters.
REF_FORBIDDEN = set("~^:?*[\\")


@dataclass(frozen=True)
class OpenRequest:
    """What an /open link asks for, validated."""

    repo: str  # an http(s) URL of a git repository
    branch: str  # "" for the repository's default branch
    path: str  # a file or folder inside the repository; "" for its top
    hub: str  # a hub's slug to open it in; "" to let the person choose

    @property
    def repo_dir(self) -> str:
        """The folder the repository is cloned into: its name, the last part of its address without ``.git``."""
        return repo_dir(self.repo)


def repo_dir(repo: str) -> str:
    name = urlsplit(repo).path.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".git") and len(name) > 4 else name


def _unprintable(value: str) -> bool:
    return any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value)


def _repo_error(repo: str) -> str | None:
    if not repo:
        return "Give the address of the git repository to open (repo=https://…)."
    if len(repo) > MAX_REPO:
        return f"A repository address has at most {MAX_REPO} characters."
    if _unprintable(repo) or repo.startswith("-"):
        return "A repository address has no spaces or control characters and does not start with '-'."
    try:
        parts = urlsplit(repo)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "This is not a valid URL."
    if parts.scheme.lower() not in SCHEMES:
        return "The repository must be an http:// or https:// address."
    if not parts.hostname:
        return "The repository address needs a host name."
    if parts.username is not None or parts.password is not None:
        return "A repository address must not hold a user name or password (the link would show them to everyone)."
    if parts.query or parts.fragment or "\\" in repo:
        return "A repository address has no '?', '#' or backslash."
    if not REPO_DIR_RE.match(repo_dir(repo)):
        return "The repository's name (the last part of its address) must be letters, digits, '.', '_' or '-'."
    return None


def _branch_error(branch: str) -> str | None:
    """The rules of ``git check-ref-format`` for a branch name, and a length limit."""
    if not branch:
        return None
    if len(branch) > MAX_BRANCH:
        return f"A branch name has at most {MAX_BRANCH} characters."
    if _unprintable(branch) or REF_FORBIDDEN & set(branch):
        return "A branch name has no spaces, control characters or any of ~ ^ : ? * [ \\."
    parts = branch.split("/")
    if (branch.startswith("-") or ".." in branch or "@{" in branch or branch == "@" or branch.endswith(".")
            or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)):
        return "This is not a valid branch name (git refuses it)."
    return None


def _path_error(path: str) -> str | None:
    if not path:
        return None
    if len(path) > MAX_PATH:
        return f"A path has at most {MAX_PATH} characters."
    if _unprintable(path.replace(" ", "")) or "\\" in path:
        return "A path has no control characters or backslashes."
    if path.startswith("/") or ".." in path.split("/"):
        return "The path is inside the repository: it does not start with '/' and has no '..'."
    return None


def _hub_error(hub: str) -> str | None:
    if hub and not SLUG_RE.match(hub):
        return "This is not a hub's name (lowercase letters, digits and '-')."
    return None


def parse(args: Mapping[str, str]) -> OpenRequest:
    """The validated request of an /open link's query (``args`` maps each name to its first value); raises
    FieldErrors naming each field that cannot be accepted.  Pure."""
    values = {key: args.get(key) or "" for key in ("repo", "branch", "path", "hub")}
    checks = {"repo": _repo_error, "branch": _branch_error, "path": _path_error, "hub": _hub_error}
    errors = {key: message for key, check in checks.items() if (message := check(values[key]))}
    if errors:
        raise FieldErrors(errors)
    return OpenRequest(**values)


def pull_url(hub_url: str, request: OpenRequest) -> str:
    """nbgitpuller's link on the hub at ``hub_url``: the person's server pulls the repository into ``repo_dir`` and
    opens ``path`` in it with JupyterLab.  Every value is URL-encoded; the path inside ``urlpath`` is a URL path,
    so it is encoded once as such before.  Pure."""
    base = hub_url if hub_url.endswith("/") else hub_url + "/"
    urlpath = "lab/tree/" + quote(request.repo_dir) + ("/" + quote(request.path) if request.path else "")
    query = {"repo": request.repo, **({"branch": request.branch} if request.branch else {}),
             "targetpath": request.repo_dir, "urlpath": urlpath}
    return f"{base}hub/user-redirect/git-pull?{urlencode(query, quote_via=quote, safe='')}"


@dataclass(frozen=True)
class Choice:
    """One of the person's hubs and the link that opens the content there (None: the hub cannot be opened now;
    ``hub.launch_reason`` says why)."""

    hub: MyHub
    url: str | None


def choices(user: User, request: OpenRequest) -> list[Choice]:
    """The hubs ``user`` belongs to, as My hubs lists them, each with its nbgitpuller link; only the one named by
    ``request.hub`` when there is one (none when it is not theirs: another institution's hub is never revealed)."""
    rows = [row for row in my_hubs(user) if not request.hub or row.slug == request.hub]
    openable = [row.hub_id for row in rows if row.launch_url]
    urls = dict(db.session.execute(db.select(Hub.id, Hub.url).where(Hub.id.in_(openable))).all()) if openable else {}
    return [Choice(row, pull_url(urls[row.hub_id], request) if row.hub_id in urls else None) for row in rows]


def direct(options: list[Choice]) -> str | None:
    """Where to send the person without asking: the link of their one hub that can open it now, if there is exactly
    one; None when they must choose, or cannot open it anywhere.  Pure."""
    ready = [choice.url for choice in options if choice.url]
    return ready[0] if len(ready) == 1 else None
