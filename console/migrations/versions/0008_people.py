"""people managed in the console: invitations, and accounts that can be disabled

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 17:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user') as batch:
        batch.add_column(sa.Column('disabled_at', sa.DateTime(), nullable=True))
    op.create_table('invitation',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('token_hash', sa.String(length=64), nullable=False),
                    sa.Column('role', sa.String(length=30), nullable=False),
                    sa.Column('institution_id', sa.Integer(), nullable=True),
                    sa.Column('email', sa.String(length=254), nullable=True),
                    sa.Column('expires_at', sa.DateTime(), nullable=False),
                    sa.Column('max_uses', sa.Integer(), nullable=False),
                    sa.Column('use_count', sa.Integer(), nullable=False),
                    sa.Column('revoked_at', sa.DateTime(), nullable=True),
                    sa.Column('created_by_id', sa.Integer(), nullable=True),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['institution_id'], ['institution.id'], name='fk_invitation_institution'),
                    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name='fk_invitation_created_by'),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('token_hash', name='uq_invitation_token_hash'))
    op.create_index('ix_invitation_institution_id', 'invitation', ['institution_id'])


def downgrade():
    op.drop_index('ix_invitation_institution_id', 'invitation')
    op.drop_table('invitation')
    with op.batch_alter_table('user') as batch:
        batch.drop_column('disabled_at')
