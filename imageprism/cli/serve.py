"""``imageprism serve INDEX_DIR``: the HTTP API and page over an index (needs imageprism[serve])."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from imageprism.cli._common import add_selection_flags, apply_limits, prism_from_args, prism_with_cache

#: environment variable holding the bearer token when --token is not given
TOKEN_ENV = "IMAGEPRISM_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help="serve an index over HTTP (add, search, compare, delete; a page at /)",
        description="Serve the index in INDEX_DIR (created if the folder is new or empty) over HTTP, "
        "with OpenAPI docs at /docs and a page at /. Binds to loopback unless --host says otherwise.",
    )
    parser.add_argument("index_dir", metavar="INDEX_DIR", help="the index directory (created when new)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000; 0: any free port)")
    add_selection_flags(parser)
    parser.add_argument("--threshold", type=float, metavar="SCORE",
                        help="score from which an added image reports near-duplicates (default: the profile's, else 0.9 for hash)")
    parser.add_argument("--token", help=f"require 'Authorization: Bearer TOKEN' on every read and write "
                        f"(default: ${TOKEN_ENV} if set, else no token)")
    parser.add_argument("--max-upload-mb", type=float, default=32.0, metavar="MB",
                        help="largest request body, checked as it arrives (default: 32)")
    parser.add_argument("--decode-workers", type=int, default=2, metavar="N",
                        help="most images decoded and embedded at once (default: 2)")
    parser.add_argument("--max-connections", type=int, default=32, metavar="N",
                        help="connections served at once; more are answered 503 (default: 32; bounds the memory "
                        "held by uploads to about N x --max-upload-mb)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="answer 503 to a request not done within this time (default: 60)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn  # the serve extra; imageprism.serve names the install command when missing

    from imageprism.serve import Catalogue, Limits, create_app

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), decode_workers=args.decode_workers, request_timeout=args.timeout)
    explicit = args.profile or args.dimensions or args.hash or args.model
    existing = os.path.isdir(args.index_dir) and bool(os.listdir(args.index_dir))
    prism = prism_with_cache(args.index_dir, args.cache) if existing and not explicit else prism_from_args(args)
    catalogue = Catalogue(args.index_dir, prism, limits=limits, threshold=args.threshold)
    apply_limits(catalogue.prism, args)  # --max-pixels / --max-bytes, also on an index's own prism
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not _is_loopback(args.host):
        sys.stderr.write(f"imageprism serve: warning: listening on {args.host} without a token; anyone who can "
                         f"reach it can read and change the index (set --token or ${TOKEN_ENV})\n")
    family, kind, _, _, address = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)  # bound and listening here, so --port 0 reports its port and a client
    listener.listen(2048)  # connecting right after the start line waits in the backlog
    host, port = listener.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    sys.stderr.write(f"imageprism serve: {len(catalogue.index)} items from {args.index_dir}, listening on {url}\n")
    sys.stderr.flush()
    config = uvicorn.Config(create_app(catalogue, token=token), log_level="warning", timeout_keep_alive=5,
                            limit_concurrency=args.max_connections)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
