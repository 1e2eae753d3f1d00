"""From the outbox to the world: alert sinks (webhook, Slack, Alertmanager) and the Security Hub
export. Deliveries are read from the store's durable outbox and marked there; nothing here
decides access or runs a scan. May import `store`, `config`, `collect` (Security Hub's client),
`model` and `errors`; never `run`, `cli` or `formats`' commands.
"""
