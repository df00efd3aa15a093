"""``coord web``: serve the dashboard (board, live workers, cost; actions behind a token)."""

from __future__ import annotations

import click

from .main import State, coord, pass_state, run
from .output import echo


@coord.command(short_help="Serve a web dashboard: the board, live workers, cost, actions.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; other than loopback, others reach it.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=7434, show_default=True,
              help="Port to listen on (0: a free one).")  # fmt: skip
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Read the actions' token from this file (mode 600).")  # fmt: skip
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between two status passes over the machines.")  # fmt: skip
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME[:PORT]",
              help="Also answer for this Host (a proxy's name); again for more.")  # fmt: skip
@pass_state
def web(state: State, host: str, port: int, token_file: str | None, interval: float,
        allow_hosts: tuple[str, ...]) -> None:  # fmt: skip
    """Serve a dashboard in the browser: each repo's issues in the pipeline's columns, the
    machines, each worker's live events, and the spend; stop, retry, bounce, merge and
    approve from the page.

    One status pass over the machines every --interval seconds, over one connection per
    machine, whatever the number of pages open.  Actions need the token printed at start
    (in the address's #token=… fragment, which the browser never sends); without it the
    pages are read-only.  It listens on loopback unless --host says otherwise.

    \b
    Examples:
      coord web                               # then open the address it prints
      coord web --port 8080 --interval 10
      coord web --token-file ~/.coord/web-token --host 0.0.0.0 --allow-host dash.lan
    """
    from coordlib.web import WebOptions, require

    require()  # starlette and uvicorn: an extra, named with its pip command when missing
    from coordlib.web.security import is_loopback, load_token, new_token
    from coordlib.web.server import bind, serve

    token = load_token(token_file) if token_file else new_token()
    sock = bind(host, port)
    options = WebOptions(token=token, host=host, port=sock.getsockname()[1], interval=interval,
                         allow_hosts=allow_hosts)  # fmt: skip
    if not is_loopback(host):
        echo(f"coord: WARNING: listening on {host}, not loopback: anyone who can reach this "
             "machine can read the board; actions still need the token, sent in clear over "
             "plain HTTP (put TLS in front, or keep to 127.0.0.1 and use `ssh -L`)",
             err=True)  # fmt: skip

    def ready() -> None:
        if token_file:
            echo(f"coord web: {options.url}#token=…  (the token in {token_file})")
        else:
            echo(f"coord web: {options.url}#token={token}")
        echo("  read-only without the token; Ctrl-C stops the server (workers keep running)")

    async def go() -> None:
        async with state.coordinator() as c:
            await serve(c, options, sock, on_ready=ready)

    try:
        run(go)
    finally:
        sock.close()
