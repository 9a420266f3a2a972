"""Typed stub of the native module ``ferrocorn._native`` (built from crates/native)."""

__version__: str

def main(argv: list[str]) -> int:
    """Run the ferrocorn command line (without the program name) and return its exit code.

    ``argv[0] == "bench"`` runs the load generator; otherwise argv is Gunicorn's command line.
    Blocks until the server stops.
    """
    ...

class FileWrapper:
    """``wsgi.file_wrapper``: wraps a file-like object; sent with sendfile when it has a fileno."""

    filelike: object
    blksize: int
    def __init__(self, filelike: object, blksize: int = 8192) -> None: ...
    def __iter__(self) -> "FileWrapper": ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...
