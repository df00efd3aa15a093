"""The floor for asking a fleet once: a bare asyncssh script, run as a whole process.

    python3 bench/_floor_ssh.py SPEC.json

SPEC.json is a list of {"host", "port", "user", "key", "known_hosts", "command"}.  Every
machine gets one connect and one command, all at once; the script prints one line per
machine (its name and the number of output lines) and exits non-zero if any failed.
Nothing but asyncssh: this is what any tool must pay, at least, to ask N machines once.
"""

import asyncio
import json
import sys

import asyncssh


async def ask(m: dict) -> tuple[str, int]:
    async with asyncssh.connect(
        m["host"],
        port=m["port"],
        username=m["user"],
        client_keys=[m["key"]],
        known_hosts=m["known_hosts"],
    ) as conn:
        result = await conn.run(m["command"], check=False)
        out = result.stdout if isinstance(result.stdout, str) else ""
        return f"{m['host']}:{m['port']}", len(out.splitlines())


async def main(path: str) -> int:
    with open(path) as f:
        machines = json.load(f)
    results = await asyncio.gather(*(ask(m) for m in machines), return_exceptions=True)
    failed = 0
    for m, r in zip(machines, results, strict=True):
        if isinstance(r, BaseException):
            failed += 1
            print(f"{m['host']}:{m['port']} ERROR {r!r}")
        else:
            print(f"{r[0]} {r[1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
