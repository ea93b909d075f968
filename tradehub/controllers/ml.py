"""Rules of the ML tables: models, predictions, labels, feature vectors, indicators."""

import math
import re

from ..errors import invalid, not_found
from ..repositories.features import FeatureSchemaRepository
from ..repositories.table import Repository
from ..schema.tables import FEATURE_SET, LABELED_DATA, ML_MODEL, ML_PREDICTION, TECHNICAL_INDICATOR
from .base import TableController

_INDICATOR_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _finite(row, index, *names):
    for name in names:
        value = row[name]
        if value is not None and not math.isfinite(value):
            raise invalid(index, name, "must be a finite number")


def _horizon(row, index):
    if row["horizon"] <= 0:
        raise invalid(index, "horizon", "must be above 0 seconds")


class ModelController(TableController):
    table = ML_MODEL

    def rules(self, row, index):
        for name in ("name", "version"):
            if not row[name].strip():
                raise invalid(index, name, "must not be empty")


class PredictionController(TableController):
    table = ML_PREDICTION
    models = Repository(ML_MODEL)
    # What prepare() checks, for the one-statement INSERT.
    insert_guard = "EXISTS (SELECT FROM ml_model m WHERE m.id = u.model_id AND m.status = 'ready')"

    def rules(self, row, index):
        _finite(row, index, "value", "confidence")
        if not 0 <= row["confidence"] <= 1:
            raise invalid(index, "confidence", "must be within [0, 1]")
        _horizon(row, index)

    async def prepare(self, cursor, rows, command, existing):
        models = {m["id"]: m for m in await self.models.where_in(cursor, "id", {row["model_id"] for row in rows})}
        for index, row in enumerate(rows):
            model = models.get(row["model_id"])
            if model is None:
                raise not_found(index, "ml_model", "id", row["model_id"])
            if model["status"] != "ready":
                raise invalid(
                    index, "model_id", f"model {model['name']} {model['version']} is {model['status']}, not ready"
                )


class LabeledDataController(TableController):
    table = LABELED_DATA

    def rules(self, row, index):
        if row["label_class"] is None and row["label_value"] is None:
            raise invalid(index, "label_class", "or label_value must be given")
        _finite(row, index, "label_value")
        _horizon(row, index)


class FeatureSetController(TableController):
    """Feature names are kept once per (name, version), in feature_schema."""

    table = FEATURE_SET
    computed_sql = {"feature_names": FeatureSchemaRepository.NAMES_OF_ROW}
    schemas = FeatureSchemaRepository()

    def rules(self, row, index):
        if not row["features"]:
            raise invalid(index, "features", "must hold at least one value")
        names = row["feature_names"]
        if names and len(names) != len(row["features"]):
            raise invalid(index, "features", f"has {len(row['features'])} values for {len(names)} feature names")
        if len(set(names)) != len(names):
            raise invalid(index, "feature_names", "must not repeat a name")

    async def prepare(self, cursor, rows, command, existing):
        known = await self.schemas.names(cursor, {(row["name"], row["version"]) for row in rows})
        for index, row in enumerate(rows):
            schema = (row["name"], row["version"])
            names = list(row["feature_names"])
            stored = known.get(schema)
            if stored is None:
                if not names:
                    raise invalid(
                        index, "feature_names", f"must be given with the first vector of {schema[0]} {schema[1]}"
                    )
                await self.schemas.add(cursor, schema, names)
                known[schema] = stored = names
            elif names and names != stored:
                raise invalid(index, "feature_names", f"differ from those stored for {schema[0]} {schema[1]}")
            row["feature_names"] = stored  # as a write answer tells it, echoed or not
            if len(row["features"]) != len(stored):
                raise invalid(
                    index,
                    "features",
                    f"has {len(row['features'])} values; {schema[0]} {schema[1]} has {len(stored)} features",
                )


class IndicatorController(TableController):
    table = TECHNICAL_INDICATOR

    def rules(self, row, index):
        if not _INDICATOR_NAME.match(row["name"]):
            raise invalid(index, "name", "must be a lower-case identifier such as sma or macd")
        if not row["values"]:
            raise invalid(index, "values", "must hold at least one value")
