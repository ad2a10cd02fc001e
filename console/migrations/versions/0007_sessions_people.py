"""server-side login sessions, login throttling, API tokens with a name, scopes, expiry and revocation

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 17:20:00

"""
from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('user_session',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('user_id', sa.Integer(), nullable=False),
                    sa.Column('key_hash', sa.String(length=64), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
                    sa.Column('ended_at', sa.DateTime(), nullable=True),
                    sa.Column('ended_reason', sa.String(length=40), nullable=False, server_default=''),
                    sa.Column('user_agent', sa.String(length=300), nullable=False, server_default=''),
                    sa.Column('address', sa.String(length=64), nullable=False, server_default=''),
                    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name='fk_user_session_user'),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('key_hash', name='uq_user_session_key_hash'))
    op.create_index('ix_user_session_user_id', 'user_session', ['user_id'])
    op.create_table('login_throttle',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('scope', sa.String(length=10), nullable=False),
                    sa.Column('key_hash', sa.String(length=64), nullable=False),
                    sa.Column('failures', sa.Integer(), nullable=False),
                    sa.Column('last_failure_at', sa.DateTime(), nullable=False),
                    sa.Column('blocked_until', sa.DateTime(), nullable=True),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('scope', 'key_hash', name='uq_login_throttle_scope_key'))
    with op.batch_alter_table('api_token') as batch:
        batch.add_column(sa.Column('name', sa.String(length=100), nullable=False, server_default=''))
        batch.add_column(sa.Column('scopes', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('revoked_at', sa.DateTime(), nullable=True))
    # Tokens made before tokens had names, scopes and expiry keep what they could do, for 90 more days.
    op.execute("UPDATE api_token SET name = 'token ' || CAST(id AS VARCHAR(20)), "
               "scopes = '[\"read\", \"write\"]'")
    api_token = sa.table('api_token', sa.column('expires_at', sa.DateTime()))
    in_90_days = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=90)
    op.execute(api_token.update().values(expires_at=in_90_days))
    with op.batch_alter_table('api_token') as batch:
        batch.alter_column('expires_at', existing_type=sa.DateTime(), nullable=False)


def downgrade():
    with op.batch_alter_table('api_token') as batch:
        batch.drop_column('revoked_at')
        batch.drop_column('expires_at')
        batch.drop_column('scopes')
        batch.drop_column('name')
    op.drop_table('login_throttle')
    op.drop_index('ix_user_session_user_id', 'user_session')
    op.drop_table('user_session')
