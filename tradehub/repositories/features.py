"""feature_schema: the names of a feature set's features, kept once per (name, version)."""

NAMES_OF_ROW = "(SELECT s.feature_names FROM feature_schema s WHERE s.name = t.name AND s.version = t.version)"


class FeatureSchemaRepository:
    NAMES_OF_ROW = NAMES_OF_ROW

    async def names(self, cursor, schemas):
        """{(name, version): [feature names]} for those that are stored, locked until the transaction ends."""
        if not schemas:
            return {}
        names = [name for name, _ in schemas]
        versions = [version for _, version in schemas]
        await cursor.execute(
            "SELECT s.name, s.version, s.feature_names FROM feature_schema s"
            " JOIN unnest(%s::text[], %s::text[]) AS w(name, version) USING (name, version) FOR UPDATE OF s",
            (names, versions),
        )
        return {(name, version): list(features) for name, version, features in cursor.fetchall()}

    async def add(self, cursor, schema, feature_names):
        await cursor.execute(
            "INSERT INTO feature_schema (name, version, feature_names) VALUES (%s, %s, %s::text[])",
            (schema[0], schema[1], feature_names),
        )
