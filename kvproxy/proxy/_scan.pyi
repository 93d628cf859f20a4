from collections.abc import Set

def scan_run(
    buf: bytes | bytearray, pos: int, max_bulk_len: int, special: Set[bytes] | None, /
) -> tuple[int, int, int, str | None]: ...
def scan_replies(
    buf: bytes | bytearray, pos: int, want: int, need: int, push: bool, /
) -> tuple[int, int, int, bool, int]: ...
