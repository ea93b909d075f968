"""
One controller per table, each declaring its table and its rules; built
once per daemon and shared by the wire routes and the Alpaca sync.
"""

from __future__ import annotations

from typing import Any

from ..db.pool import Pool
from ..schema.model import SQLTable
from .alpaca import AccountController, AssetController, OrderController, PositionController, TradeController
from .base import Page, TableController
from .market import MarketTickController
from .ml import FeatureSetController, IndicatorController, LabeledDataController, ModelController, PredictionController

CONTROLLERS: tuple[type[TableController], ...] = (
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


def build_controllers(pool: Pool, broker: Any = None) -> dict[SQLTable, TableController]:
    """Every table's controller; C{broker} (the Alpaca client, or None) lets ORDER inserts be submitted."""
    return {cls.table.id: cls(pool, broker) for cls in CONTROLLERS}


__all__ = ["CONTROLLERS", "Page", "TableController", "build_controllers"]
