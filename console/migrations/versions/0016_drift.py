"""the fleet as code: the config digest each hub runs

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 02:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('hub') as batch:
        batch.add_column(sa.Column('config_digest', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('config_digest_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('hub') as batch:
        batch.drop_column('config_digest_at')
        batch.drop_column('config_digest')
