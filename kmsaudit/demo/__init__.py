"""`kmsaudit demo`: the newcomer's first run (`tour`) on an embedded AWS emulator (`emulator`,
moto's server on 127.0.0.1, an optional extra). It drives the rest as a user would, through
`run`, `store`, `formats` and `acceptance`; nothing imports it but the CLI and the tests.
"""
