"""Self-service journeys as small state machines with server-side state. No Flask here."""
