"""``python -m backend keys ...``: manage remote mode (server key pair, admitted clients).

keys server-init [--force]                 create the server key pair and signing key
keys client-new NAME --endpoint HOST:PORT  admit a new client; print its connection string
                                           (and write a connection file with --out FILE)
keys allow PUBKEY NAME                     admit a key made elsewhere (a host's "paste address" flow)
keys revoke NAME                           refuse that client from now on (also on open connections)
keys list                                  the admitted clients
keys show                                  the server's public key (for the paste-address flow)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from backend import remote
from protocol import connection


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend keys", description="Manage remote mode's keys.")
    parser.add_argument(
        "--keys-dir", type=Path, help="default: $LAYEREDIT_KEYS_DIR or ~/.config/layeredit/server"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("server-init", help="create the server key pair and signing key")
    init.add_argument("--force", action="store_true", help="replace existing keys (clients must re-import)")
    new = sub.add_parser("client-new", help="admit a new client and print its connection string")
    new.add_argument("name")
    new.add_argument("--endpoint", required=True, help="HOST:PORT the client reaches the server at")
    new.add_argument("--out", type=Path, help="also write a connection file here (mode 0600)")
    allow = sub.add_parser("allow", help="admit a client's public key")
    allow.add_argument("pubkey")
    allow.add_argument("name")
    revoke = sub.add_parser("revoke", help="refuse a client from now on")
    revoke.add_argument("name")
    sub.add_parser("list", help="list the admitted clients")
    sub.add_parser("show", help="print the server's public key")
    return parser


def _positionals_after_allow(argv: Sequence[str]) -> list[str]:
    """A Z85 public key may start with '-', which argparse would read as an option: after ``allow``
    everything is positional (an explicit ``--`` the user typed is kept as it is)."""
    args = list(argv)
    if "allow" in args and "--" not in args:
        args.insert(args.index("allow") + 1, "--")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_positionals_after_allow(sys.argv[1:] if argv is None else argv))
    directory = args.keys_dir or remote.keys_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized = remote.AuthorizedKeys(directory / remote.AUTHORIZED_FILE)
    try:
        if args.action == "server-init":
            keys = remote.init_server(directory, force=args.force)
            print(
                f"server keys written to {directory / remote.SERVER_FILE}\nserver public key: {keys.public}"
            )
        elif args.action == "client-new":
            host, port = remote.parse_listen(args.endpoint)
            endpoint = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
            info = remote.client_new(args.name, endpoint, directory)
            if args.out:
                connection.write(info, args.out)
                print(f"connection file written to {args.out} (keep it private)", file=sys.stderr)
            print(connection.to_string(info))
        elif args.action == "allow":
            authorized.allow(args.pubkey, args.name)
            print(f"admitted {args.name}")
        elif args.action == "revoke":
            if not authorized.revoke(args.name):
                print(f"error: no client named {args.name!r} (see: keys list)", file=sys.stderr)
                return 1
            print(f"revoked {args.name}")
        elif args.action == "list":
            for name, key in sorted(authorized.entries().items()):
                print(f"{name}\t{key}")
        elif args.action == "show":
            keys = remote.load_server(directory)
            print(f"server public key: {keys.public}\nsigning key: {keys.hmac_key}")
    except (remote.KeysError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
