"""The console's tables."""
from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, event, text
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from tenants import outbound

from console.extensions import db

OPERATOR = "operator"
INSTITUTION_ADMIN = "institution_admin"
MEMBER = "member"  # a person whose only rights come from memberships (console/services/memberships.py)
ROLES = (OPERATOR, INSTITUTION_ADMIN, MEMBER)
# Memberships: what a person is on a hub (or on every hub of an institution), and where the grant came from.
MEMBERSHIP_ROLES = ("member", "hub-admin")
MEMBERSHIP_SOURCES = ("invitation", "rule", "operator")
SERVER_STATES = ("running", "pending", "stopped")

# Operation states: queued (never claimed), running (a worker holds its lease), waiting (requeued: a worker looks
# again at ``run_after``), succeeded or failed.  ``outcome`` says how a finished one ended.
QUEUED, RUNNING, WAITING, SUCCEEDED, FAILED = "queued", "running", "waiting", "succeeded", "failed"
OPERATION_STATES = (QUEUED, RUNNING, WAITING, SUCCEEDED, FAILED)
OPERATION_TERMINAL = frozenset({SUCCEEDED, FAILED})
OPERATION_PENDING = (QUEUED, RUNNING, WAITING)
# Typed outcomes: nothing reads meaning out of an error text.  The operation's state is "succeeded" for SUCCEEDED
# and SKIPPED, "failed" for the others.
OUTCOME_SUCCEEDED, OUTCOME_FAILED, OUTCOME_ROLLED_BACK = "succeeded", "failed", "rolled_back"
OUTCOME_SKIPPED, OUTCOME_CANCELLED = "skipped", "cancelled"
OUTCOMES = (OUTCOME_SUCCEEDED, OUTCOME_FAILED, OUTCOME_ROLLED_BACK, OUTCOME_SKIPPED, OUTCOME_CANCELLED)


def utcnow() -> datetime:
    # Naive UTC everywhere: SQLite keeps no time zone, and mixing aware and naive values fails comparisons.
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Institution(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The institution's config layer (validated, without secrets), its secrets (Fernet token) and its policy.
    auth: Mapped[dict] = mapped_column(JSON, default=dict)
    auth_secrets: Mapped[str] = mapped_column(Text, default="")
    environment: Mapped[dict] = mapped_column(JSON, default=dict)
    policy: Mapped[dict] = mapped_column(JSON, default=dict)
    config_updated_at: Mapped[datetime | None]
    # Times its hubs must not be touched: [{"start": ISO, "end": ISO, "reason": ...}], UTC.
    blackouts: Mapped[list] = mapped_column(JSON, default=list)


class ConfigDraft(db.Model):
    """An admin's edits not yet applied, kept so nothing typed is lost between edit, preview and apply."""

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    auth: Mapped[dict] = mapped_column(JSON, default=dict)  # as typed, secrets removed
    auth_secrets: Mapped[str] = mapped_column(Text, default="")  # newly typed secrets, encrypted
    environment: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("institution_id", "user_id"),)


class Cluster(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    backend: Mapped[str] = mapped_column(String(40))
    # Backend settings (for local: root dir, port range).  No secrets here.
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), default="ready")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Provisioning: the provider (infra.providers), its Terraform variables, credentials (Fernet token of
    # {ENV_VAR: value}), the plan awaiting approval, non-sensitive outputs, and a kubeconfig (Fernet token).
    provider: Mapped[str | None] = mapped_column(String(20))
    variables: Mapped[dict] = mapped_column(JSON, default=dict)
    credentials: Mapped[str] = mapped_column(Text, default="")
    plan: Mapped[dict | None] = mapped_column(JSON)
    outputs: Mapped[dict] = mapped_column(JSON, default=dict)
    kubeconfig: Mapped[str] = mapped_column(Text, default="")
    # Kubernetes onboarding: the last check's results [{"name", "ok", "detail", "fix"}] and when it ran (None: never).
    checks: Mapped[list] = mapped_column(JSON, default=list)
    checked_at: Mapped[datetime | None]
    # Usage showback (migration 0014): {"currency", "server_hour", "cpu_hour", "gb_hour"} set by operators; {}: none.
    prices: Mapped[dict] = mapped_column(JSON, default=dict)


class Release(db.Model):
    """A platform release: a JupyterHub version (local: its own environment; Kubernetes: chart and hub image)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    jupyterhub_version: Mapped[str] = mapped_column(String(40))
    chart_version: Mapped[str] = mapped_column(String(40), default="")
    hub_image: Mapped[str] = mapped_column(String(300), default="")
    channel: Mapped[str] = mapped_column(String(20), default="stable")
    config: Mapped[dict] = mapped_column(JSON, default=dict)  # a default config layer: {"environment": {...}}
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Lifecycle (console/lifecycles.py): preparing -> ready | failed; ready -> retracted.  Only a ready release is
    # used by new hubs or rolled out; ``error`` says why preparing failed.
    state: Mapped[str] = mapped_column(String(20), default="preparing")
    error: Mapped[str] = mapped_column(Text, default="")
    retracted_at: Mapped[datetime | None]


class Hub(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("cluster.id"), index=True)
    # Desired
    desired: Mapped[str] = mapped_column(String(20), default="running")  # running | deleted
    spec: Mapped[dict] = mapped_column(JSON, default=dict)  # {"release": ..., "auth": {...}, "environment": {...}}
    # Lifecycle, written only by console.services.hubs.transition
    state: Mapped[str] = mapped_column(String(20), default="requested")
    # Observed
    health: Mapped[str] = mapped_column(String(20), default="unknown")
    url: Mapped[str | None] = mapped_column(String(300))
    jupyterhub_version: Mapped[str | None] = mapped_column(String(40))
    user_count: Mapped[int | None]
    status_message: Mapped[str] = mapped_column(Text, default="")
    observed_at: Mapped[datetime | None]
    health_since: Mapped[datetime | None]
    # Releases: the hub runs ``release``; it follows ``channel`` unless ``pinned``; canaries go first in rollouts.
    release_id: Mapped[int | None] = mapped_column(ForeignKey("release.id"))
    previous_release_id: Mapped[int | None] = mapped_column(ForeignKey("release.id"))
    channel: Mapped[str] = mapped_column(String(20), default="stable")
    pinned: Mapped[bool] = mapped_column(default=False)
    canary: Mapped[bool] = mapped_column(default=False)
    running_servers: Mapped[int | None]
    active_users: Mapped[int | None]  # in the last 24 h
    probe_seconds: Mapped[float | None]
    # Supervision (local hubs): restarts after the hub's processes died, counted until it stays healthy a while.
    restart_count: Mapped[int] = mapped_column(default=0)
    restarted_at: Mapped[datetime | None]
    # Usage (migration 0014): when a sweep last listed the hub's servers; a longer pause than a few probe intervals
    # is a gap in its usage (UsageGap).  None: never listed.
    servers_listed_at: Mapped[datetime | None]
    # Drift (migration 0016): the digest of the configuration the hub reported running (clusters/config_digest.py)
    # and when it was read; None: unknown (down, or started before hubs reported one).
    config_digest: Mapped[str | None] = mapped_column(String(64))
    config_digest_at: Mapped[datetime | None]
    # Opaque to the console: what the backend needs to find the hub again.
    backend_state: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]

    # "unnested": loaded behind an outer join (an operation's hub), these chain as outer joins instead of a nested
    # inner join, which SQLite answers by materialising every hub for each row.
    institution: Mapped[Institution] = relationship(lazy="joined", innerjoin="unnested")
    cluster: Mapped[Cluster] = relationship(lazy="joined", innerjoin="unnested")
    release: Mapped[Release | None] = relationship(foreign_keys=[release_id], lazy="joined")

    __table_args__ = (
        # A slug names one live hub; a deleted hub's slug may be used again.
        Index("uq_hub_live_slug", "slug", unique=True,
              sqlite_where=text("state != 'deleted'"), postgresql_where=text("state != 'deleted'")),
    )


class Operation(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))  # one of console.worker.HANDLERS
    # An operation acts on a hub, a cluster or a release.
    hub_id: Mapped[int | None] = mapped_column(ForeignKey("hub.id"), index=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"), index=True)
    release_id: Mapped[int | None] = mapped_column(ForeignKey("release.id"), index=True)
    actor: Mapped[str] = mapped_column(String(254))
    state: Mapped[str] = mapped_column(String(20), default=QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_expires: Mapped[datetime | None]
    error: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str | None] = mapped_column(String(20))  # one of OUTCOMES once finished
    # Where a handler is (its step), its scratch data (never a secret), what it waits for, and when to look again.
    step: Mapped[str] = mapped_column(String(40), default="")
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    run_after: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    hub: Mapped[Hub | None] = relationship(lazy="joined")
    cluster: Mapped[Cluster | None] = relationship(lazy="joined")
    release: Mapped[Release | None] = relationship(lazy="joined")
    lines: Mapped[list[OperationLog]] = relationship(order_by="OperationLog.id", cascade="all, delete-orphan",
                                                     lazy="select")

    @property
    def terminal(self) -> bool:
        return self.state in OPERATION_TERMINAL

    @property
    def target(self) -> str:
        if self.hub:
            return self.hub.slug
        return self.cluster.name if self.cluster else self.release.name


class OperationLog(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operation.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class AuditEvent(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(200))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class User(UserMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # "": no password login (a person an IdP made)
    role: Mapped[str] = mapped_column(String(30))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A disabled account cannot log in and its sessions and tokens stop working, until an admin enables it again.
    disabled_at: Mapped[datetime | None]
    # The person's name on hubs: minted once when the row is first written (``mint_usernames``), lowercase
    # [a-z0-9-], never changed and never handed to anyone else (``UsernameClaim`` outlives the account).
    username: Mapped[str] = mapped_column(String(40))

    institution: Mapped[Institution | None] = relationship(lazy="joined")

    __table_args__ = (Index("uq_user_username", "username", unique=True),)

    @property
    def label(self) -> str:
        """How pages name the person: their email, or their username when the email is only a placeholder (a person
        whose IdP vouched for no address has ``<username>@<institution>.invalid``, which reaches nobody)."""
        return self.username if self.email.endswith(".invalid") and self.username else self.email

    @property
    def is_active(self) -> bool:
        """Flask-Login's flag: ``login_user`` and the session and token checks refuse an inactive account."""
        return self.disabled_at is None


class ApiToken(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the token itself is never kept
    name: Mapped[str] = mapped_column(String(100), default="")
    # What the token may do: actions and groups of console.permissions, never more than its owner may.
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]  # to the minute: written at most once a minute

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Invitation(db.Model):
    """A link that lets up to ``max_uses`` people create an account with ``role`` (of ``institution``) until
    ``expires_at``.  Only the token's hash is kept: the token itself is shown once, to whoever invited.

    With ``hub`` set it is a hub invitation instead: it creates no account but makes a logged-in person a member of
    that hub (``role`` "member", ``institution`` the hub's; console/services/memberships.py)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    role: Mapped[str] = mapped_column(String(30))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"), index=True)
    email: Mapped[str | None] = mapped_column(String(254))  # when set, the only address the account may have
    expires_at: Mapped[datetime]
    max_uses: Mapped[int] = mapped_column(default=1)
    use_count: Mapped[int] = mapped_column(default=0)
    revoked_at: Mapped[datetime | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))  # None once that account is removed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    hub_id: Mapped[int | None] = mapped_column(ForeignKey("hub.id"), index=True)

    institution: Mapped[Institution | None] = relationship(lazy="joined")
    created_by: Mapped[User | None] = relationship(lazy="joined")
    hub: Mapped[Hub | None] = relationship(lazy="joined")


class UsernameClaim(db.Model):
    """Every username ever minted, kept after its account is removed, so no one inherits a former person's name
    (hubs name home directories and pods after it)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(db.Model):
    """A grant: ``user`` is ``role`` ("member" or "hub-admin") of ``hub``, or of every hub of ``institution``
    (exactly one of the two), from ``source`` ("invitation", "rule", "operator"; ``ref`` says which one).  Active
    while neither revoked nor expired."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    hub_id: Mapped[int | None] = mapped_column(ForeignKey("hub.id"), index=True)
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"), index=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    source: Mapped[str] = mapped_column(String(20))
    ref: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))  # None: a rule, or a removed account

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined", innerjoin=True)
    hub: Mapped[Hub | None] = relationship(lazy="joined")
    institution: Mapped[Institution | None] = relationship(lazy="joined")

    __table_args__ = (
        Index("ix_membership_user", "user_id", "revoked_at"),
        CheckConstraint("(hub_id IS NULL) != (institution_id IS NULL)", name="ck_membership_hub_xor_institution"),
    )

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())

    @classmethod
    def active_clause(cls, now: datetime | None = None):
        """``active`` as a query condition: neither revoked nor expired at ``now`` (default: now)."""
        now = now or utcnow()
        return cls.revoked_at.is_(None) & (cls.expires_at.is_(None) | (cls.expires_at > now))


class ServerSnapshot(db.Model):
    """What the monitoring sweep last saw of one user's server on one hub (``GET /hub/api/users?state=active``):
    "My hubs" reads this, never the hub."""

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"))
    username: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(10))  # running | pending | stopped
    started: Mapped[datetime | None]
    last_activity: Mapped[datetime | None]
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("hub_id", "username", name="uq_server_snapshot_hub_username"),)

class UserSession(db.Model):
    """A login: the browser's cookie holds a random key whose hash is here, so logging out (or a password change)
    ends it for good, where a signed cookie alone could be replayed."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the cookie's key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)  # to the minute, like ApiToken.last_used_at
    ended_at: Mapped[datetime | None]
    ended_reason: Mapped[str] = mapped_column(String(40), default="")  # logout | password change | ended by ...
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    address: Mapped[str] = mapped_column(String(64), default="")

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class InstitutionIdp(db.Model):
    """An institution's own identity provider for console login (console/services/identities.py): an OpenID
    Connect client built from its discovery document.  ``issuer`` is the document's issuer when it was saved; the
    people it logs in are keyed on (issuer, sub).  ``client_secret`` is a Fernet token (console/crypto.py).
    ``authoritative_domains``: the email domains this issuer vouches for (its verified emails of these domains may
    link identities).  Member rule: people whose ``member_claim`` holds one of ``member_values`` are members of every
    hub of the institution (no values: everyone this IdP logs in)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"), unique=True)
    issuer: Mapped[str] = mapped_column(String(500), index=True)
    discovery_url: Mapped[str] = mapped_column(String(2000))
    client_id: Mapped[str] = mapped_column(String(300))
    client_secret: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[str] = mapped_column(String(300), default="openid profile email")
    authoritative_domains: Mapped[list] = mapped_column(JSON, default=list)
    member_claim: Mapped[str] = mapped_column(String(100), default="")
    member_values: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    institution: Mapped[Institution] = relationship(lazy="joined", innerjoin=True)


class Identity(db.Model):
    """One way a person logs in through an IdP: (issuer, subject) names it, never an email.  ``claims`` are the
    last claims the IdP sent (no tokens)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    claims: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)
    institution: Mapped[Institution | None] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_identity_issuer_subject"),)


class LoginState(db.Model):
    """An IdP login under way: what its callback needs (PKCE verifier, nonce, where to go next), kept server-side
    (a Fernet token) under the hash of its ``state``, bound to the browser that started it by the hash of a key its
    cookie holds.  Used once; dropped when used or expired."""

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class HubClient(db.Model):
    """A hub's client at the console's OpenID provider (console/services/federation.py), made when the hub is first
    rendered with federated login.  ``client_id`` is ``hub-<hub id>``; ``secrets`` is a Fernet token of the client
    secret and the hub's auth-state key, which the hub gets through the secret channel."""

    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"), primary_key=True)
    secrets: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    hub: Mapped[Hub] = relationship(lazy="joined", innerjoin=True)


class OAuthCode(db.Model):
    """An authorization code the console issued to a hub: single-use (``used_at``), short-lived, bound to the hub's
    client, its redirect URI and a PKCE challenge.  Only its hash is kept."""

    __tablename__ = "oauth_code"
    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    redirect_uri: Mapped[str] = mapped_column(String(400))
    scope: Mapped[str] = mapped_column(String(200))
    nonce: Mapped[str] = mapped_column(String(200), default="")
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    auth_time: Mapped[int]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class OAuthToken(db.Model):
    """Tokens the console issued to a hub for one person: hashes only.  Revoked when the person's membership of the
    hub ends, when the code they came from is replayed, or when a refresh replaces them."""

    __tablename__ = "oauth_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    code_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_code.id"), index=True)
    access_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    access_expires_at: Mapped[datetime]
    refresh_expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (Index("ix_oauth_token_user_client", "user_id", "client_id"),)


class SigningKey(db.Model):
    """A key the console signs ID tokens with: the private JWK as a Fernet token, published (public part only) at
    the JWKS endpoint under ``kid``.  The newest unretired one signs."""

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    private_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]


class LoginThrottle(db.Model):
    """Consecutive failed logins for one account or one address (``scope``), kept in the database so that every
    console process counts the same failures."""

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(10))  # account | address
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the email as typed, or of the address
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow)
    blocked_until: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("scope", "key_hash", name="uq_login_throttle_scope_key"),)


class HubSample(db.Model):
    """One probe of a hub (resolution 'raw'), or an hour of them averaged (resolution 'hour')."""

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"))
    at: Mapped[datetime]
    resolution: Mapped[str] = mapped_column(String(8), default="raw")
    up: Mapped[float]  # 1/0 for a probe; the fraction up for an hour
    duration: Mapped[float]
    running_servers: Mapped[float | None]
    total_users: Mapped[float | None]
    active_users: Mapped[float | None]  # 24 h
    spawn_success: Mapped[int | None]
    spawn_failure: Mapped[int | None]
    # False when the backend saw the hub's processes gone (definitive: down at once); None when it did not look.
    alive: Mapped[bool | None]

    __table_args__ = (Index("ix_hub_sample_hub_at", "hub_id", "at"), Index("ix_hub_sample_at", "at"))


class WebhookTarget(db.Model):
    """Where alerts go: the operators' (no institution) or one institution's (console/services/webhooks.py)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    secret: Mapped[str] = mapped_column(Text, default="")  # the signing secret, encrypted (console/crypto.py)
    last_delivery_at: Mapped[datetime | None]
    last_delivery_ok: Mapped[bool | None]  # whether it took the last notice sent to it (answered 2xx)

    institution: Mapped[Institution | None] = relationship(lazy="joined")

    @property
    def origin(self) -> str:
        """All of the URL that pages, logs and audit entries show: its path is often a token (Slack, Teams)."""
        return outbound.origin(self.url)


class Alert(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # down | degraded
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    notified_at: Mapped[datetime | None]
    recovery_notified_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    # Email to the hub's contacts (migration 0017; console/services/alert_email.py): when the alert and its recovery
    # were emailed, the last failed try (retried after a pause) and what institution admins may read of it.
    emailed_at: Mapped[datetime | None]
    recovery_emailed_at: Mapped[datetime | None]
    email_tried_at: Mapped[datetime | None]
    email_error: Mapped[str] = mapped_column(Text, default="")

    hub: Mapped[Hub] = relationship(lazy="joined", innerjoin=True)


class Lease(db.Model):
    """A named job only one process may do at a time (the monitor's sweep), held until ``expires``."""

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(120))
    expires: Mapped[datetime]


class Rollout(db.Model):
    """A change taken hub by hub: a release (``kind`` "release") or an institution's config (``kind`` "config")."""

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="release")
    release_id: Mapped[int | None] = mapped_column(ForeignKey("release.id"))
    # A config rollout: the institution and the config it brings ({"auth", "environment"}; secrets encrypted apart).
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    config: Mapped[dict | None] = mapped_column(JSON)
    config_secrets: Mapped[str] = mapped_column(Text, default="")
    target: Mapped[dict] = mapped_column(JSON, default=dict)  # {"channel"|"institution"|"hubs": ...}
    state: Mapped[str] = mapped_column(String(20), default="planned")  # planned running paused halted aborted done
    max_unavailable: Mapped[int] = mapped_column(default=1)
    gate_seconds: Mapped[int] = mapped_column(default=30)
    synthetic_check: Mapped[bool] = mapped_column(default=False)
    current_wave: Mapped[int] = mapped_column(default=0)
    gate_started_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    release: Mapped[Release | None] = relationship(lazy="joined")
    institution: Mapped[Institution | None] = relationship(lazy="joined")
    hubs: Mapped[list[RolloutHub]] = relationship(order_by="RolloutHub.id", lazy="select",
                                                  cascade="all, delete-orphan")


class RolloutHub(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollout.id"), index=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"))
    wave: Mapped[int]
    # pending deferred upgrading upgraded failed rolled_back skipped
    state: Mapped[str] = mapped_column(String(20), default="pending")
    operation_id: Mapped[int | None] = mapped_column(ForeignKey("operation.id"))
    check_operation_id: Mapped[int | None] = mapped_column(ForeignKey("operation.id"))
    note: Mapped[str] = mapped_column(Text, default="")

    hub: Mapped[Hub] = relationship(lazy="joined", innerjoin=True)


# -- usernames ------------------------------------------------------------------------------------------------------

USERNAME_MAX = 32  # leaves room in a pod or volume name ("jupyter-<name>", "claim-<name>") within 63


def username_base(text: str) -> str:
    """The name a person's username is minted from: the local part of an email (or a given name), folded to ASCII,
    lowercase, runs of anything but [a-z0-9] made one "-", beginning with a letter; pure."""
    local = unicodedata.normalize("NFKD", (text or "").split("@", 1)[0]).encode("ascii", "ignore").decode().lower()
    name = re.sub(r"[^a-z0-9]+", "-", local).strip("-")
    if not name:
        name = "user"
    elif not name[0].isalpha():
        name = f"u-{name}"
    return name[:USERNAME_MAX].rstrip("-")


def mint_username(session, text: str) -> str:
    """Claim a new username from ``text`` (``username_base``); one taken now or ever before gets a short random
    suffix.  Adds the ``UsernameClaim`` to ``session``: the unique column refuses the same name claimed by another
    transaction at once."""
    base = username_base(text)
    pending = {o.username for o in session.new if isinstance(o, UsernameClaim)}
    candidates = [base] + [f"{base[:USERNAME_MAX - 5]}-{secrets.token_hex(2)}" for _ in range(12)] + \
        [f"{base[:USERNAME_MAX - 9]}-{secrets.token_hex(4)}"]
    with session.no_autoflush:
        taken = set(session.execute(db.select(UsernameClaim.username)
                                    .where(UsernameClaim.username.in_(candidates))).scalars()) | pending
    name = next(c for c in candidates if c not in taken)
    session.add(UsernameClaim(username=name))
    return name


@event.listens_for(Session, "before_flush")
def _mint_usernames(session, flush_context, instances) -> None:
    """Every new account gets its username when first written, from its email, unless one was minted already."""
    for user in [o for o in session.new if isinstance(o, User) and not o.username]:
        user.username = mint_username(session, user.email)


# -- usage (migration 0014) ------------------------------------------------------------------------------------------

class ServerSession(db.Model):
    """One run of one user's server on one hub, from the times the hub reports (console/services/usage.py): from
    its ``started`` until it stopped (``ended``; None while it runs).  ``end_exact``: the hub said when it stopped;
    otherwise it ended the last time a sweep saw it running.  ``cpu`` (cores) and ``memory`` (GB): what a Kubernetes
    hub's servers request (its effective environment's guarantees, else limits) when the session began; None
    elsewhere.  (hub, username, started) names a session once, however many sweeps see it."""

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"))
    username: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime]
    ended: Mapped[datetime | None]
    end_exact: Mapped[bool] = mapped_column(default=False)
    last_seen: Mapped[datetime]  # the console's time of the last sweep that listed it running
    last_activity: Mapped[datetime | None]
    cpu: Mapped[float | None]
    memory: Mapped[float | None]

    __table_args__ = (UniqueConstraint("hub_id", "username", "started", name="uq_server_session_hub_user_started"),
                      Index("ix_server_session_hub_ended", "hub_id", "ended"),
                      Index("ix_server_session_started", "started"))


class UsageGap(db.Model):
    """A span in which the sweeps did not list a hub's servers (down, unreachable, or no sweep ran) for longer than
    a few probe intervals: servers that started and stopped inside it are not known."""

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"))
    start: Mapped[datetime]
    end: Mapped[datetime]

    __table_args__ = (Index("ix_usage_gap_hub_start", "hub_id", "start"),)



# -- archives and decommission (migration 0015) ---------------------------------------------------------------------

# A decommission request: asked (pending), refused, or approved, after which its operation archives and removes the
# hub (running) and it ends done or failed (the hub kept, nothing removed: it may be approved again).
DECOMMISSION_STATES = ("pending", "refused", "running", "done", "failed")
ARCHIVE_STATES = ("kept", "purged")


class Archive(db.Model):
    """What was kept of a decommissioned hub: one file (``location``) with its database and users' homes.  The hub
    is named by slug and institution id as they were: its row goes to deleted and its slug may be used again."""

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int | None] = mapped_column(ForeignKey("hub.id"))
    hub_slug: Mapped[str] = mapped_column(String(63))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("cluster.id"))
    backend: Mapped[str] = mapped_column(String(40))
    location: Mapped[str] = mapped_column(String(1000))
    size: Mapped[int] = mapped_column(db.BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict] = mapped_column(JSON, default=dict)  # clusters.base.ArchiveResult.manifest
    state: Mapped[str] = mapped_column(String(20), default="kept")  # one of ARCHIVE_STATES
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retain_until: Mapped[datetime] = mapped_column(index=True)
    purged_at: Mapped[datetime | None]

    institution: Mapped[Institution] = relationship(lazy="joined", innerjoin=True)
    cluster: Mapped[Cluster] = relationship(lazy="joined", innerjoin=True)


class DecommissionRequest(db.Model):
    """Someone asked for a hub to be decommissioned (``reason``); an operator refuses (``note`` says why) or
    approves it, which queues the operation that archives the hub, then removes it."""

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hub.id"), index=True)
    requested_by: Mapped[str] = mapped_column(String(254))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # one of DECOMMISSION_STATES
    decided_by: Mapped[str | None] = mapped_column(String(254))
    decided_at: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")
    operation_id: Mapped[int | None] = mapped_column(ForeignKey("operation.id"))
    archive_id: Mapped[int | None] = mapped_column(ForeignKey("archive.id"))

    hub: Mapped[Hub] = relationship(lazy="joined", innerjoin=True)
    # Set, not shown (pages link operation_id): joined, each would bring its own hub, cluster and release along.
    operation: Mapped[Operation | None] = relationship()
    archive: Mapped[Archive | None] = relationship()


# -- contacts (migration 0017) ---------------------------------------------------------------------------------------

CONTACT_KINDS = ("technical", "administrative")


class Contact(db.Model):
    """Someone to reach about an institution's hubs (console/services/contacts.py): the institution's own
    (``hub_id`` None, for all its hubs) or one hub's.  Which of them an alert is emailed to: ``contacts.recipients``."""

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"), index=True)
    hub_id: Mapped[int | None] = mapped_column(ForeignKey("hub.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # one of CONTACT_KINDS
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(40), default="")
    receives_alerts: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    hub: Mapped[Hub | None] = relationship(lazy="joined")
