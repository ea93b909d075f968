"""
The routes the daemon serves: the five commands of every table, each bound
to its table's controller. Consecutive INSERTs of a table may be coalesced.
"""

from .controllers.alpaca import (
    AccountController,
    AssetController,
    OrderController,
    PositionController,
    TradeController,
)
from .controllers.market import MarketTickController
from .controllers.ml import (
    FeatureSetController,
    IndicatorController,
    LabeledDataController,
    ModelController,
    PredictionController,
)
from .dispatch import Registry, Route
from .protocol.enums import SQLCommand

CONTROLLERS = (
    AccountController,
    AssetController,
    OrderController,
    PositionController,
    TradeController,
    MarketTickController,
    ModelController,
    PredictionController,
    LabeledDataController,
    FeatureSetController,
    IndicatorController,
)


def build_registry(pool, broker=None):
    """Every route; C{broker} (the Alpaca client, or None) lets ORDER inserts be submitted."""
    registry = Registry()
    for cls in CONTROLLERS:
        controller = cls(pool, broker) if cls is OrderController else cls(pool)
        spec = controller.spec
        handlers = {
            SQLCommand.INSERT: (controller.insert, controller.insert_group),
            SQLCommand.UPSERT: (controller.upsert, None),
            SQLCommand.UPDATE: (controller.update, None),
            SQLCommand.DELETE: (controller.delete, None),
            SQLCommand.SELECT: (controller.select, None),
        }
        for command, (handle, handle_group) in handlers.items():
            registry.add(Route(command, spec.table, spec.request(command), handle, handle_group))
    return registry
