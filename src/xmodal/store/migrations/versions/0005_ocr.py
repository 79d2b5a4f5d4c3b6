"""text read from images (OCR): the text, its lines with boxes, the reader that ran; where each vector came from;
an ``ocr`` column in the full-text table

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = "name, caption, body, sounds"
_POSTGRES_DOCUMENT = (
    "setweight(to_tsvector('english', caption), 'A') || setweight(to_tsvector('simple', name), 'B')"
    " || setweight(to_tsvector('english', ocr), 'B') || setweight(to_tsvector('english', body), 'C')"
    " || setweight(to_tsvector('simple', sounds), 'D')"
)


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ocr_text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ocr_lines", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("ocr_engine", sa.String(64), nullable=True))
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(16), nullable=True))
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":  # an FTS5 table takes no new column: copy its rows into one that has it
        op.execute(
            "CREATE VIRTUAL TABLE items_fts_new USING fts5(name, caption, body, sounds, ocr, "
            "tokenize='porter unicode61')"
        )
        op.execute(f"INSERT INTO items_fts_new(rowid, {_COLUMNS}, ocr) SELECT rowid, {_COLUMNS}, '' FROM items_fts")
        op.execute("DROP TABLE items_fts")
        op.execute("ALTER TABLE items_fts_new RENAME TO items_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX ix_items_fts_document")
        op.execute("ALTER TABLE items_fts DROP COLUMN document")
        op.execute("ALTER TABLE items_fts ADD COLUMN ocr TEXT NOT NULL DEFAULT ''")
        op.execute(
            f"ALTER TABLE items_fts ADD COLUMN document tsvector GENERATED ALWAYS AS ({_POSTGRES_DOCUMENT}) STORED"
        )
        op.execute("CREATE INDEX ix_items_fts_document ON items_fts USING GIN (document)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"CREATE VIRTUAL TABLE items_fts_old USING fts5({_COLUMNS}, tokenize='porter unicode61')")
        op.execute(f"INSERT INTO items_fts_old(rowid, {_COLUMNS}) SELECT rowid, {_COLUMNS} FROM items_fts")
        op.execute("DROP TABLE items_fts")
        op.execute("ALTER TABLE items_fts_old RENAME TO items_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX ix_items_fts_document")
        op.execute("ALTER TABLE items_fts DROP COLUMN document")
        op.execute("ALTER TABLE items_fts DROP COLUMN ocr")
        op.execute(
            "ALTER TABLE items_fts ADD COLUMN document tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english', caption), 'A') || setweight(to_tsvector('simple', name), 'B')"
            " || setweight(to_tsvector('english', body), 'C') || setweight(to_tsvector('simple', sounds), 'D')"
            ") STORED"
        )
        op.execute("CREATE INDEX ix_items_fts_document ON items_fts USING GIN (document)")
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.drop_column("origin")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_column("ocr_engine")
        batch_op.drop_column("ocr_lines")
        batch_op.drop_column("ocr_text")
