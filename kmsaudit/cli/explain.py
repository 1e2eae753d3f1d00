"""`kmsaudit explain FINDING_ID` and `evaluate --explain` (SPEC §6): the command line's side;
what they show is made in kmsaudit/formats/explained.py and kmsaudit/evaluator/remedy.py."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def explain_command(args: argparse.Namespace) -> int:
    from kmsaudit.formats.explained import explain_stored

    return explain_stored(args.config, args.finding_id, args.snapshot, args.format)


def write_evaluated(explained: list[Any], fmt: str, policy: str | None) -> None:
    """`evaluate --explain`: every finding with its explanation and remediation, in `findings`'
    order, in any finding format (OCSF with `remediation`)."""
    import json

    from kmsaudit.formats.explained import explained_dict, write_explained
    from kmsaudit.formats.render import sort_findings

    order = {f.id: i for i, f in enumerate(sort_findings([f for f, _, _ in explained]))}
    explained.sort(key=lambda item: order[item[0].id])
    if fmt.startswith("ocsf"):
        from kmsaudit.formats.ocsf import finding_to_ocsf

        objects = [finding_to_ocsf(f, explained=(e, r)) for f, e, r in explained]
        if fmt == "ocsf":
            json.dump(objects, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.writelines(json.dumps(o) + "\n" for o in objects)
    elif fmt == "json":  # a list, as without --explain (`explain`'s one finding is an object)
        json.dump([explained_dict(*item) for item in explained], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not explained and fmt == "table":
        print("No cross-account access found.")
    else:
        write_explained(explained, "jsonl" if fmt == "jsonl" else "table", sys.stdout, policy, sys.stdout.isatty())
