"""
The ledger's pure rules (tradehub/alpaca/ledger.py): which of Alpaca's
order reports are news, and where a position moves after a fill.
"""

from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from tradehub.alpaca.ledger import PositionReport, moved
from tradehub.controllers.alpaca import _news
from tradehub.schema.timestamp import Timestamp

ACCOUNT = "904837e3-3b76-47ec-b432-046db621571b"


def order(status, filled, at, **changes):
    return dict(status=status, filled_qty=Decimal(filled), updated_at=Timestamp(at), symbol="AAPL", **changes)


def report(qty, price, at=1):
    return PositionReport(ACCOUNT, "AAPL", Decimal(qty), Decimal(price), None, "us_equity", Timestamp(at))


class NewsTests(SynchronousTestCase):
    def test_an_order_not_stored_is_news(self):
        self.assertTrue(_news(None, order("new", 0, 1)))

    def test_a_report_behind_in_status_or_fill_is_not(self):
        stored = order("partially_filled", 4, 10)
        self.assertFalse(_news(stored, order("new", 0, 20)), "status behind, even with a later time")
        self.assertFalse(_news(stored, order("partially_filled", 2, 20)), "fewer filled")
        self.assertFalse(_news(order("canceled", 4, 10), order("filled", 10, 20)), "a final status stays")

    def test_a_refused_cancel_or_replace_moves_the_order_back_unless_the_report_is_older(self):
        for pending in ("pending_cancel", "pending_replace"):
            stored = order(pending, 0, 10)
            self.assertTrue(_news(stored, order("new", 0, 20)), pending)
            self.assertFalse(_news(stored, order("new", 0, 5)), f"{pending}: a report from before it")

    def test_a_report_ahead_is_news_whatever_its_time(self):
        stored = order("pending_new", 0, 10)
        self.assertTrue(_news(stored, order("new", 0, 5)), "status ahead, though the hub's clock ran ahead")
        self.assertTrue(_news(order("partially_filled", 4, 10), order("partially_filled", 6, 5)), "more filled")

    def test_at_the_same_stage_the_later_report_wins_and_an_equal_one_is_not_news(self):
        stored = order("new", 0, 10, limit_price=Decimal(1))
        self.assertFalse(_news(stored, order("new", 0, 5, limit_price=Decimal(2))), "older")
        self.assertTrue(_news(stored, order("new", 0, 20, limit_price=Decimal(2))), "newer and different")
        self.assertFalse(_news(stored, order("new", 0, 10, limit_price=Decimal(1))), "the same")


class MovedTests(SynchronousTestCase):
    def held(self, qty, entry):
        return moved(None, report(qty, entry))

    def test_a_new_position_enters_at_the_fill_price(self):
        row = self.held("10", "100")
        self.assertEqual((row["qty"], row["side"], row["avg_entry_price"], row["cost_basis"]), (10, "long", 100, 1000))

    def test_growing_averages_in_the_fill_price(self):
        row = moved(self.held("10", "100"), report("15", "103"))
        self.assertEqual(row["avg_entry_price"], Decimal("101.000000000"))
        self.assertEqual(row["cost_basis"], Decimal("1515.000000000"))

    def test_shrinking_keeps_the_entry_price(self):
        row = moved(self.held("10", "100"), report("4", "120"))
        self.assertEqual((row["qty"], row["avg_entry_price"]), (4, 100))

    def test_flipping_side_starts_over_at_the_fill_price(self):
        row = moved(self.held("10", "100"), report("-5", "120"))
        self.assertEqual((row["qty"], row["side"], row["avg_entry_price"]), (-5, "short", 120))
        self.assertEqual(row["cost_basis"], Decimal("-600.000000000"))

    def test_figures_that_need_a_market_price_are_left_to_the_sync(self):
        old = dict(self.held("10", "100"), market_value=Decimal(1200), current_price=Decimal(120))
        row = moved(old, report("12", "110"))
        self.assertIsNone(row["market_value"])
        self.assertEqual(row["current_price"], 120)
        self.assertEqual(row["updated_at"], Timestamp(1), "as of the fill")
