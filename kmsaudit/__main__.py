from kmsaudit.cli import run

run()
