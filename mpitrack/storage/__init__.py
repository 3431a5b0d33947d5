"""Storage behind protocols, as transport is: base.py says what the roles need,
postgres.py provides it over PostgreSQL (whose SQL lives in store.py and stats/)."""
