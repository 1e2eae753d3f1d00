"""The configuration (SPEC §7): settings validated with pydantic (`settings`; the
acceptance entries in `accept`, the strict base model and account id in `base`), read from TOML
with every mistake as one line naming the file and the key (`file`). It may import `errors` and
the evaluator's action patterns; nothing that reads AWS or the store.
"""
