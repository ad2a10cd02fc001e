"""the console as its hubs' OpenID provider: each hub's client, authorization codes, tokens and signing keys

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 23:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('hub_client',
                    sa.Column('hub_id', sa.Integer(), nullable=False),
                    sa.Column('secrets', sa.Text(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id']),
                    sa.PrimaryKeyConstraint('hub_id'))
    op.create_table('oauth_code',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('code_hash', sa.String(length=64), nullable=False),
                    sa.Column('client_id', sa.String(length=40), nullable=False),
                    sa.Column('user_id', sa.Integer(), nullable=False),
                    sa.Column('redirect_uri', sa.String(length=400), nullable=False),
                    sa.Column('scope', sa.String(length=200), nullable=False),
                    sa.Column('nonce', sa.String(length=200), nullable=False),
                    sa.Column('code_challenge', sa.String(length=128), nullable=False),
                    sa.Column('code_challenge_method', sa.String(length=10), nullable=False),
                    sa.Column('auth_time', sa.Integer(), nullable=False),
                    sa.Column('expires_at', sa.DateTime(), nullable=False),
                    sa.Column('used_at', sa.DateTime(), nullable=True),
                    sa.ForeignKeyConstraint(['user_id'], ['user.id']),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('code_hash'))
    op.create_index('ix_oauth_code_expires_at', 'oauth_code', ['expires_at'])
    op.create_table('oauth_token',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('client_id', sa.String(length=40), nullable=False),
                    sa.Column('user_id', sa.Integer(), nullable=False),
                    sa.Column('code_id', sa.Integer(), nullable=True),
                    sa.Column('access_hash', sa.String(length=64), nullable=False),
                    sa.Column('refresh_hash', sa.String(length=64), nullable=True),
                    sa.Column('scope', sa.String(length=200), nullable=False),
                    sa.Column('issued_at', sa.DateTime(), nullable=False),
                    sa.Column('access_expires_at', sa.DateTime(), nullable=False),
                    sa.Column('refresh_expires_at', sa.DateTime(), nullable=True),
                    sa.Column('revoked_at', sa.DateTime(), nullable=True),
                    sa.ForeignKeyConstraint(['user_id'], ['user.id']),
                    sa.ForeignKeyConstraint(['code_id'], ['oauth_code.id']),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('access_hash'),
                    sa.UniqueConstraint('refresh_hash'))
    op.create_index('ix_oauth_token_code_id', 'oauth_token', ['code_id'])
    op.create_index('ix_oauth_token_user_client', 'oauth_token', ['user_id', 'client_id'])
    op.create_table('signing_key',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('kid', sa.String(length=64), nullable=False),
                    sa.Column('private_jwk', sa.Text(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('retired_at', sa.DateTime(), nullable=True),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('kid'))


def downgrade():
    op.drop_table('signing_key')
    op.drop_index('ix_oauth_token_user_client', table_name='oauth_token')
    op.drop_index('ix_oauth_token_code_id', table_name='oauth_token')
    op.drop_table('oauth_token')
    op.drop_index('ix_oauth_code_expires_at', table_name='oauth_code')
    op.drop_table('oauth_code')
    op.drop_table('hub_client')
