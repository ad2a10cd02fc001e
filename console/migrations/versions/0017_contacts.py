"""contacts of institutions and hubs, and alert emails

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 02:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('contact',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('institution_id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=True),
                    sa.Column('kind', sa.String(length=20), nullable=False),
                    sa.Column('name', sa.String(length=200), nullable=False),
                    sa.Column('email', sa.String(length=254), nullable=False),
                    sa.Column('phone', sa.String(length=40), nullable=False),
                    sa.Column('receives_alerts', sa.Boolean(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('updated_at', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['institution_id'], ['institution.id']),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id']),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_contact_institution_id', 'contact', ['institution_id'])
    op.create_index('ix_contact_hub_id', 'contact', ['hub_id'])
    with op.batch_alter_table('alert') as batch:
        batch.add_column(sa.Column('emailed_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('recovery_emailed_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('email_tried_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('email_error', sa.Text(), nullable=False, server_default=''))


def downgrade():
    with op.batch_alter_table('alert') as batch:
        batch.drop_column('email_error')
        batch.drop_column('email_tried_at')
        batch.drop_column('recovery_emailed_at')
        batch.drop_column('emailed_at')
    op.drop_index('ix_contact_hub_id', table_name='contact')
    op.drop_index('ix_contact_institution_id', table_name='contact')
    op.drop_table('contact')
