# The C module sidecar/_h1fast.c, built by scripts/build_native.py with the compiled modules
# (served from build/native like them; absent in pure-Python mode).

from collections.abc import Iterable

def parse_request(
    data: bytes, start: int, limit: int, /
) -> tuple[int, str, bytes, str, list[tuple[str, str]], bool, bytes] | None: ...
def parse_response(
    data: bytes, limit: int, /
) -> tuple[int, list[tuple[str, str]], bytes, bool] | None: ...
def head_bytes(
    first: str, headers: Iterable[tuple[str, str]], skip: frozenset[str], tail: str, /
) -> bytes: ...
