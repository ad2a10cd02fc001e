"""usage accounting: each user's server sessions on each hub, and cluster prices

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 02:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('cluster') as batch:
        batch.add_column(sa.Column('prices', sa.JSON(), nullable=False, server_default='{}'))
    with op.batch_alter_table('hub') as batch:
        batch.add_column(sa.Column('servers_listed_at', sa.DateTime(), nullable=True))
    op.create_table('server_session',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=False),
                    sa.Column('username', sa.String(length=255), nullable=False),
                    sa.Column('started', sa.DateTime(), nullable=False),
                    sa.Column('ended', sa.DateTime(), nullable=True),
                    sa.Column('end_exact', sa.Boolean(), nullable=False),
                    sa.Column('last_seen', sa.DateTime(), nullable=False),
                    sa.Column('last_activity', sa.DateTime(), nullable=True),
                    sa.Column('cpu', sa.Double(), nullable=True),
                    sa.Column('memory', sa.Double(), nullable=True),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id']),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('hub_id', 'username', 'started', name='uq_server_session_hub_user_started'))
    op.create_index('ix_server_session_hub_ended', 'server_session', ['hub_id', 'ended'])
    op.create_index('ix_server_session_started', 'server_session', ['started'])
    op.create_table('usage_gap',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('hub_id', sa.Integer(), nullable=False),
                    sa.Column('start', sa.DateTime(), nullable=False),
                    sa.Column('end', sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(['hub_id'], ['hub.id']),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_usage_gap_hub_start', 'usage_gap', ['hub_id', 'start'])


def downgrade():
    op.drop_index('ix_usage_gap_hub_start', table_name='usage_gap')
    op.drop_table('usage_gap')
    op.drop_index('ix_server_session_started', table_name='server_session')
    op.drop_index('ix_server_session_hub_ended', table_name='server_session')
    op.drop_table('server_session')
    with op.batch_alter_table('hub') as batch:
        batch.drop_column('servers_listed_at')
    with op.batch_alter_table('cluster') as batch:
        batch.drop_column('prices')
