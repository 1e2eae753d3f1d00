"""The snapshot database (SQLite, sqlite-utils), the only place with SQL: the `Store` and its
writer lock (`database`), the schema's migrations and stored-text packing (`migrations`), what
is read back (`queries`), what a snapshot carries over from the one before (`carry`), retention
(`retention`), the durable outbox of alerts and exports (`outbox`) and the documents behind each
snapshot's findings (`evidence`, for `kmsaudit explain`). sqlite errors become StoreError here.
May import `drift`, `model`, `evidence`, `errors` and the evaluator's canonical form;
never `collect`, `run` or `delivery`.
"""
