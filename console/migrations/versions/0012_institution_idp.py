"""console login through each institution's identity provider: its OpenID Connect client, people's identities
keyed on (issuer, subject), and IdP logins under way (state kept server-side)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 21:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('institution_idp',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('institution_id', sa.Integer(), nullable=False),
                    sa.Column('issuer', sa.String(length=500), nullable=False),
                    sa.Column('discovery_url', sa.String(length=2000), nullable=False),
                    sa.Column('client_id', sa.String(length=300), nullable=False),
                    sa.Column('client_secret', sa.Text(), nullable=False),
                    sa.Column('scopes', sa.String(length=300), nullable=False),
                    sa.Column('authoritative_domains', sa.JSON(), nullable=False),
                    sa.Column('member_claim', sa.String(length=100), nullable=False),
                    sa.Column('member_values', sa.JSON(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('updated_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['institution_id'], ['institution.id']),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('institution_id'))
    op.create_index('ix_institution_idp_issuer', 'institution_idp', ['issuer'])
    op.create_table('identity',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('user_id', sa.Integer(), nullable=False),
                    sa.Column('issuer', sa.String(length=500), nullable=False),
                    sa.Column('subject', sa.String(length=255), nullable=False),
                    sa.Column('institution_id', sa.Integer(), nullable=True),
                    sa.Column('claims', sa.JSON(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('last_login_at', sa.DateTime(), nullable=True),
                    sa.ForeignKeyConstraint(['user_id'], ['user.id']),
                    sa.ForeignKeyConstraint(['institution_id'], ['institution.id']),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('issuer', 'subject', name='uq_identity_issuer_subject'))
    op.create_index('ix_identity_user_id', 'identity', ['user_id'])
    op.create_table('login_state',
                    sa.Column('state_hash', sa.String(length=64), nullable=False),
                    sa.Column('browser_hash', sa.String(length=64), nullable=False),
                    sa.Column('data', sa.Text(), nullable=False),
                    sa.Column('expires_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('state_hash'))
    op.create_index('ix_login_state_expires_at', 'login_state', ['expires_at'])


def downgrade():
    op.drop_index('ix_login_state_expires_at', table_name='login_state')
    op.drop_table('login_state')
    op.drop_index('ix_identity_user_id', table_name='identity')
    op.drop_table('identity')
    op.drop_index('ix_institution_idp_issuer', table_name='institution_idp')
    op.drop_table('institution_idp')
