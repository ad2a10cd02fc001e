"""the onboarding check of Kubernetes clusters: its results and when it ran

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 20:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('cluster') as batch:
        # [{"name", "ok", "detail", "fix"}] of the last check; [] and no time: never checked.  Clusters registered
        # before keep their state ("registered") and take hubs once an operator has checked them.
        batch.add_column(sa.Column('checks', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('cluster') as batch:
        batch.drop_column('checked_at')
        batch.drop_column('checks')
