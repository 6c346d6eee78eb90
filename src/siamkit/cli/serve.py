"""``siamkit serve``: the face-search service's API keys (``serve keys add|list|revoke``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the face-search service (REST), or manage its API keys",
        description="Serve the galleries in --index over REST (OpenAPI at /openapi.json, "
        "interactive docs at /docs), or manage the API keys: each key has a "
        "role (admin: galleries and keys; enrol: add and remove faces; query: identify, "
        "verify, detect, embed) and the galleries it works on. The keys file keeps only a "
        "hash of each key.",
    )
    parser.add_argument("--model", type=Path, metavar="MODEL", help="the model folder (from "
                        "`siamkit train`) or ONNX export the galleries embed with")  # fmt: skip
    parser.add_argument("--index", type=Path, metavar="DIR", help="the galleries' folder: "
                        "DIR/<gallery>/ is a face index folder (made if missing)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on "
                        "(default: %(default)s; another needs --keys)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    parser.add_argument("--keys", type=Path, metavar="FILE", help="the API keys file: every "
                        "request then needs a key (without it, every request gets in)")  # fmt: skip
    parser.set_defaults(handler=_serve)
    keys = parser.add_subparsers(dest="serve_command", metavar="ACTION").add_parser(
        "keys", help="add, list or revoke API keys", description="Add, list or revoke the "
        "API keys in a keys file."
    )  # fmt: skip
    keys.set_defaults(handler=lambda args: keys.print_help() or 1)
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    add = actions.add_parser("add", help="make a key and print it (shown this once)")
    add.add_argument("--name", required=True, help="what the key is for, e.g. 'door camera'")
    add.add_argument("--role", required=True, choices=("admin", "enrol", "query"))
    add.add_argument("--gallery", action="append", metavar="NAME", help="a gallery the key "
                     "works on (repeat for several; default: all)")  # fmt: skip
    listing = actions.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="remove a key by its id")
    revoke.add_argument("id", help="the key's id (from `keys list`)")
    for action, handler in ((add, _add), (listing, _list), (revoke, _revoke)):
        action.add_argument("--keys", required=True, type=Path, metavar="FILE",
                            help="the keys file (made by the first `keys add`)")  # fmt: skip
        action.set_defaults(handler=handler)


def _add(args: argparse.Namespace) -> int:
    from siamkit.serve import KeyFile

    made = KeyFile(args.keys).add(args.name, args.role, args.gallery or ["*"])
    print(f"key {made.key.id} ({made.key.role}, galleries {', '.join(made.key.galleries)}): "
          f"{made.secret}")  # fmt: skip
    print("keep it now: it is shown only this once (the keys file holds its hash)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from siamkit.serve import KeyFile

    keys = KeyFile(args.keys).list_keys()
    if args.json:
        print(json.dumps([key.to_dict() for key in keys], indent=2))
        return 0
    for key in keys:
        print(f"{key.id}  {key.role:<5}  {','.join(key.galleries):<20}  {key.created}  {key.name}")
    if not keys:
        print(f"no keys in {args.keys}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from siamkit.serve import KeyFile

    key = KeyFile(args.keys).revoke(args.id)
    print(f"revoked key {key.id} ({key.role}, {key.name})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from siamkit.exceptions import ConfigError
    from siamkit.serve import KeyFile
    from siamkit.serve.server import check_bind, serve

    if args.model is None or args.index is None:
        raise ConfigError("siamkit serve needs --model MODEL and --index DIR (or an action: keys)")
    check_bind(args.host, None if args.keys is None else KeyFile(args.keys))
    print(f"serving {args.index} on http://{args.host}:{args.port} (docs at /docs)", flush=True)
    serve(args.model, args.index, host=args.host, port=args.port, keys=args.keys)
    return 0
