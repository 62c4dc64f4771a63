"""The stores: where infermq keeps jobs, results, sessions, the exact cache and API keys
(PostgreSQL and Redis), used by ``producer/`` and ``workers/``; they stand on the contracts in
``infermq/`` and on ``routing/``, never on what sits above them."""
