"""Running the pipeline (DESIGN.md): one scan (`scan`), one scope through it (`pipeline`), the
assembly of a snapshot from its scopes' parts (`assemble`), worker processes (`workers`), the
daemon's schedule and HTTP endpoints (`daemon`), CloudTrail events (`events`) and the pre-flight
(`check`). The only wing that drives the others: it may import every wing but `cli` and `demo`.
"""
