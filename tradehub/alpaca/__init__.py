"""Alpaca: the REST client, the sync of account, assets, orders and positions, and order submission."""
