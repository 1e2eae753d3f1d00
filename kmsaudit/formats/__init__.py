"""Views of a finding and of drift (SPEC §4, §6): table, JSON and JSON lines (`render`), OCSF
Detection Findings (`ocsf`), SARIF (`sarif`) and the self-contained HTML report (`report`, with
`templates/`). Views read what they are given: they never drive a scan, read AWS or write the
store. They may import `model`, `errors` and the evaluator's canonical policy text.
"""
