from django.db import migrations

# PostgreSQL keeps each message's search vector in a generated column, so that a search reads
# stored vectors (to match, through the GIN index, and to rank) instead of parsing every
# candidate's text again. The column is NULL while a reply streams: the writes of its text,
# about one a second, parse nothing and touch no search index; the vector is computed once,
# when the reply finishes. It is not a model field: only conversations/search.py reads it, and
# no other query of a message should carry it. Other databases search without it.
STREAMING = "streaming"  # Message.Status.STREAMING

ADD_SEARCH_DOCUMENT = f"""
ALTER TABLE conversations_message ADD COLUMN search_document tsvector
GENERATED ALWAYS AS (
    CASE WHEN status = '{STREAMING}' THEN NULL ELSE to_tsvector('english'::regconfig, content) END
) STORED
"""
CREATE_SEARCH_INDEX = """
CREATE INDEX message_search_document ON conversations_message USING gin (search_document)
WHERE superseded_by_id IS NULL AND search_document IS NOT NULL
"""
OLD_CONTENT_SEARCH_INDEX = """
CREATE INDEX IF NOT EXISTS message_content_search ON conversations_message
USING gin (to_tsvector('english'::regconfig, COALESCE(content, '')))
WHERE superseded_by_id IS NULL
"""


def add_search_document(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS message_content_search")
        schema_editor.execute(ADD_SEARCH_DOCUMENT)
        schema_editor.execute(CREATE_SEARCH_INDEX)
        schema_editor.execute("ANALYZE conversations_message")


def remove_search_document(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE conversations_message DROP COLUMN search_document")
        schema_editor.execute(OLD_CONTENT_SEARCH_INDEX)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_sharing"),
    ]

    operations = [
        migrations.RunPython(add_search_document, remove_search_document),
    ]
