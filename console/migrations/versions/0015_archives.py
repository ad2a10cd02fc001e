"""decommission: hub archives and decommission requests

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 02:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('archive',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=True),
                    sa.Column('hub_slug', sa.String(length=63), nullable=False),
                    sa.Column('institution_id', sa.Integer(), nullable=False),
                    sa.Column('cluster_id', sa.Integer(), nullable=False),
                    sa.Column('backend', sa.String(length=40), nullable=False),
                    sa.Column('location', sa.String(length=1000), nullable=False),
                    sa.Column('size', sa.BigInteger(), nullable=False),
                    sa.Column('sha256', sa.String(length=64), nullable=False),
                    sa.Column('manifest', sa.JSON(), nullable=False),
                    sa.Column('state', sa.String(length=20), nullable=False),
                    sa.Column('created_by', sa.String(length=254), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('retain_until', sa.DateTime(), nullable=False),
                    sa.Column('purged_at', sa.DateTime(), nullable=True),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id']),
                    sa.ForeignKeyConstraint(['institution_id'], ['institution.id']),
                    sa.ForeignKeyConstraint(['cluster_id'], ['cluster.id']),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_archive_institution_id', 'archive', ['institution_id'])
    op.create_index('ix_archive_retain_until', 'archive', ['retain_until'])
    op.create_table('decommission_request',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=False),
                    sa.Column('requested_by', sa.String(length=254), nullable=False),
                    sa.Column('requested_at', sa.DateTime(), nullable=False),
                    sa.Column('reason', sa.Text(), nullable=False),
                    sa.Column('state', sa.String(length=20), nullable=False),
                    sa.Column('decided_by', sa.String(length=254), nullable=True),
                    sa.Column('decided_at', sa.DateTime(), nullable=True),
                    sa.Column('note', sa.Text(), nullable=False),
                    sa.Column('operation_id', sa.Integer(), nullable=True),
                    sa.Column('archive_id', sa.Integer(), nullable=True),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id']),
                    sa.ForeignKeyConstraint(['operation_id'], ['operation.id']),
                    sa.ForeignKeyConstraint(['archive_id'], ['archive.id']),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_decommission_request_hub_id', 'decommission_request', ['hub_id'])


def downgrade():
    op.drop_index('ix_decommission_request_hub_id', table_name='decommission_request')
    op.drop_table('decommission_request')
    op.drop_index('ix_archive_retain_until', table_name='archive')
    op.drop_index('ix_archive_institution_id', table_name='archive')
    op.drop_table('archive')
