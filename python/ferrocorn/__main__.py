"""Console entry: ``ferrocorn ...`` and ``python -m ferrocorn ...`` hand argv to the native core."""

import signal
import sys


def main() -> None:
    from ferrocorn import _native

    # The Rust core installs its own signal handling; Python's SIGINT handler would otherwise
    # turn Ctrl-C into a KeyboardInterrupt inside whatever app code happens to run next.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_native.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
