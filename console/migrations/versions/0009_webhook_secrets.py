"""a signing secret per webhook and its last delivery; alert errors that name no webhook

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 18:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_target') as batch:
        # Fernet token of {"signing_secret": ...}; '' for webhooks added before secrets: their notices go unsigned
        # until an admin gives them one.
        batch.add_column(sa.Column('secret', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('last_delivery_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('last_delivery_ok', sa.Boolean(), nullable=True))
    # Errors written before named each webhook's URL, shown to institution admins too: forget them.
    op.execute("UPDATE alert SET last_error = '' WHERE last_error <> ''")


def downgrade():
    with op.batch_alter_table('webhook_target') as batch:
        batch.drop_column('last_delivery_ok')
        batch.drop_column('last_delivery_at')
        batch.drop_column('secret')
