"""Push: the change log as this hub sees it, and the subscriptions that follow it."""
