"""R4 Subscriptions (rest-hook): criteria as a search, notifications delivered from the outbox with retries."""
