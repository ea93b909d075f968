"""
The routes the daemon serves: every (command, table) with a controller.
Tables without one answer INTERNAL "not implemented" until the data-model
work registers them here.
"""

from .dispatch import Registry


def build_registry(pool):
    return Registry()
