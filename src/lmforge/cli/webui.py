"""``lmforge webui [--host 127.0.0.1] [--port 7860] [--auth user:password] [--workdir DIR]``.

The page listens on 127.0.0.1 unless told otherwise; any other address needs a user and a
password (``--auth`` or ``LMFORGE_WEBUI_AUTH=user:password``), because whoever reaches the
page can start processes and read files on this machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from lmforge.errors import ConfigError, LmforgeError

AUTH_ENV = "LMFORGE_WEBUI_AUTH"
DEFAULT_WORKDIR = "~/.cache/lmforge/webui"


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("webui auth must be user:password, e.g. --auth admin:a-long-secret")
    return user, password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, auth: tuple[str, str] | None) -> None:
    """Refuse to listen beyond this machine without a password."""
    if auth is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a password: anyone who reaches the page can start "
            f"training runs and read files here. Set one with --auth user:password or "
            f"{AUTH_ENV}=user:password (or keep the default --host 127.0.0.1)"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge webui",
        description="Train, watch, chat and export from a browser. Listens on 127.0.0.1; any other "
        f"--host needs --auth user:password (or {AUTH_ENV}=user:password).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--auth", default=None, help=f"user:password (or set {AUTH_ENV}); needed beyond 127.0.0.1"
    )
    parser.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        help=f"where job folders and saved configs go ({DEFAULT_WORKDIR})",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    check_exposure(args.host, auth)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:  # here, not at the top: Gradio is an optional extra, slow to import; the checks above need none
        from lmforge.webui.app import CSS, build_app
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("gradio", "pandas"):
            raise LmforgeError("lmforge webui needs Gradio: pip install 'lmforge[webui]'") from None
        raise
    workdir = Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    app = build_app(workdir)
    print(f"lmforge webui: http://{args.host}:{args.port}", flush=True)
    app.queue().launch(
        server_name=args.host,
        server_port=args.port,
        auth=auth,
        share=False,
        inbrowser=False,
        show_error=True,
        css=CSS,
        footer_links=[],
        quiet=True,
    )
    return 0
