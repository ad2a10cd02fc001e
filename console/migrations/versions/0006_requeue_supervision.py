"""operations that requeue with typed outcomes; release preparation; supervision; config rollouts; leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 14:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('operation') as batch:
        batch.add_column(sa.Column('release_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('outcome', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('step', sa.String(length=40), nullable=False, server_default=''))
        batch.add_column(sa.Column('data', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('note', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('run_after', sa.DateTime(), nullable=True))
        batch.create_index('ix_operation_release_id', ['release_id'])
        batch.create_foreign_key('fk_operation_release', 'release', ['release_id'], ['id'])
    # Finished operations get the outcome their state implies.
    op.execute("UPDATE operation SET outcome = state WHERE state IN ('succeeded', 'failed')")
    with op.batch_alter_table('release') as batch:
        # Releases published before preparation existed were in use already: they count as ready.
        batch.add_column(sa.Column('state', sa.String(length=20), nullable=False, server_default='ready'))
        batch.add_column(sa.Column('error', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('retracted_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('hub') as batch:
        batch.add_column(sa.Column('restart_count', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('restarted_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('rollout') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='release'))
        batch.alter_column('release_id', existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column('institution_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('config', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('config_secrets', sa.Text(), nullable=False, server_default=''))
        batch.create_foreign_key('fk_rollout_institution', 'institution', ['institution_id'], ['id'])
    with op.batch_alter_table('hub_sample') as batch:
        batch.add_column(sa.Column('alive', sa.Boolean(), nullable=True))
    op.create_table('lease',
                    sa.Column('name', sa.String(length=40), nullable=False),
                    sa.Column('owner', sa.String(length=120), nullable=False),
                    sa.Column('expires', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('name'))
    op.create_index('ix_operation_run_after', 'operation', ['run_after'])


def downgrade():
    op.drop_index('ix_operation_run_after', 'operation')
    op.drop_table('lease')
    with op.batch_alter_table('hub_sample') as batch:
        batch.drop_column('alive')
    with op.batch_alter_table('rollout') as batch:
        batch.drop_constraint('fk_rollout_institution', type_='foreignkey')
        batch.drop_column('config_secrets')
        batch.drop_column('config')
        batch.drop_column('institution_id')
        batch.alter_column('release_id', existing_type=sa.Integer(), nullable=False)
        batch.drop_column('kind')
    with op.batch_alter_table('hub') as batch:
        batch.drop_column('restarted_at')
        batch.drop_column('restart_count')
    with op.batch_alter_table('release') as batch:
        batch.drop_column('retracted_at')
        batch.drop_column('error')
        batch.drop_column('state')
    with op.batch_alter_table('operation') as batch:
        batch.drop_constraint('fk_operation_release', type_='foreignkey')
        batch.drop_index('ix_operation_release_id')
        batch.drop_column('run_after')
        batch.drop_column('note')
        batch.drop_column('data')
        batch.drop_column('step')
        batch.drop_column('outcome')
        batch.drop_column('release_id')
