"""Starts a Python plugin under corral.

The supervisor runs ``python3 -I -B corral_bootstrap.py <ENTRY>`` inside the
plugin's sandbox with the channel on fd 3. With ``-I`` neither the
environment nor this script's directory reaches ``sys.path``, so this
directory (which holds the ``corral`` package) is put first; the entry's
directory comes next, so the plugin's own modules import as they would if
it were run as a script.
"""

import os
import sys


def main() -> None:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python3 -I -B corral_bootstrap.py <ENTRY>\n")
        sys.exit(64)  # EX_USAGE
    # The host keeps stdout line by line in its log: a line printed should
    # get there when printed, not when a block buffer fills.
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path[:1] != [here]:
        sys.path.insert(0, here)
    from corral.entry import run

    run(sys.argv[1])


if __name__ == "__main__":
    main()
