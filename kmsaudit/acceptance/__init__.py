"""Accepted access (README "Accepting known access"): `[[accept]]` entries and the findings
they cover.

- `matcher`: pure — entries × findings → accepted flags, lapses, unused entries. It may import
  the evaluator's matching helpers, `model` and `gcpause`; nothing that does I/O.
- `entries`: the entry `kmsaudit accept` proposes for a finding, and its atomic append to an
  acceptance file (the config it then reloads). May import `config` and `errors`.
"""
