"""memberships of hubs, hub invitations, usernames minted once, and the servers the sweep saw

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 21:00:00

"""
import re
import unicodedata

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def _base(email: str) -> str:
    """The username an existing account gets: the rule of console.models.username_base as it stood at this
    revision (kept here so the migration does not change when the model does)."""
    local = unicodedata.normalize("NFKD", email.split("@", 1)[0]).encode("ascii", "ignore").decode().lower()
    name = re.sub(r"[^a-z0-9]+", "-", local).strip("-") or "user"
    if not name[0].isalpha():
        name = f"u-{name}"
    return name[:32].rstrip("-")


def upgrade():
    op.create_table('username_claim',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('username', sa.String(length=40), nullable=False),
                    sa.Column('claimed_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('username', name='uq_username_claim_username'))
    with op.batch_alter_table('user') as batch:
        batch.add_column(sa.Column('username', sa.String(length=40), nullable=True))
    connection = op.get_bind()
    user, claim = sa.table('user', sa.column('id'), sa.column('email'), sa.column('username')), \
        sa.table('username_claim', sa.column('username'), sa.column('claimed_at'))
    taken: set[str] = set()
    for user_id, email in connection.execute(sa.select(user.c.id, user.c.email).order_by(user.c.id)).all():
        name = _base(email)
        if name in taken:
            name = f"{name[:32 - len(str(user_id)) - 1]}-{user_id}"
        taken.add(name)
        connection.execute(user.update().where(user.c.id == user_id).values(username=name))
        connection.execute(claim.insert().values(username=name, claimed_at=sa.func.now()))
    op.create_index('uq_user_username', 'user', ['username'], unique=True)
    if connection.dialect.name != 'sqlite':
        # SQLite would rebuild the table for this, which its foreign keys refuse while accounts have tokens; there
        # the column stays nullable in the schema and the model fills it for every new account.
        op.alter_column('user', 'username', existing_type=sa.String(length=40), nullable=False)

    with op.batch_alter_table('invitation') as batch:
        batch.add_column(sa.Column('hub_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_invitation_hub', 'hub', ['hub_id'], ['id'])
        batch.create_index('ix_invitation_hub_id', ['hub_id'])

    op.create_table('membership',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('user_id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=True),
                    sa.Column('institution_id', sa.Integer(), nullable=True),
                    sa.Column('role', sa.String(length=20), nullable=False),
                    sa.Column('source', sa.String(length=20), nullable=False),
                    sa.Column('ref', sa.String(length=100), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('expires_at', sa.DateTime(), nullable=True),
                    sa.Column('revoked_at', sa.DateTime(), nullable=True),
                    sa.Column('created_by_id', sa.Integer(), nullable=True),
                    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name='fk_membership_user'),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id'], name='fk_membership_hub'),
                    sa.ForeignKeyConstraint(['institution_id'], ['institution.id'],
                                            name='fk_membership_institution'),
                    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name='fk_membership_created_by'),
                    sa.CheckConstraint('(hub_id IS NULL) != (institution_id IS NULL)',
                                       name='ck_membership_hub_xor_institution'),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_membership_user', 'membership', ['user_id', 'revoked_at'])
    op.create_index('ix_membership_hub_id', 'membership', ['hub_id'])
    op.create_index('ix_membership_institution_id', 'membership', ['institution_id'])

    op.create_table('server_snapshot',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=False),
                    sa.Column('username', sa.String(length=255), nullable=False),
                    sa.Column('state', sa.String(length=10), nullable=False),
                    sa.Column('started', sa.DateTime(), nullable=True),
                    sa.Column('last_activity', sa.DateTime(), nullable=True),
                    sa.Column('seen_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id'], name='fk_server_snapshot_hub'),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('hub_id', 'username', name='uq_server_snapshot_hub_username'))


def downgrade():
    op.drop_table('server_snapshot')
    op.drop_index('ix_membership_institution_id', 'membership')
    op.drop_index('ix_membership_hub_id', 'membership')
    op.drop_index('ix_membership_user', 'membership')
    op.drop_table('membership')
    with op.batch_alter_table('invitation') as batch:
        batch.drop_index('ix_invitation_hub_id')
        batch.drop_constraint('fk_invitation_hub', type_='foreignkey')
        batch.drop_column('hub_id')
    op.drop_index('uq_user_username', 'user')
    with op.batch_alter_table('user') as batch:
        batch.drop_column('username')
    op.drop_table('username_claim')
