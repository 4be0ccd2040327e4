"""DVC stage `fetch`: a thin entry point; `segbench fetch --help` lists its arguments."""

import sys

from segbench.commands.fetch import main

if __name__ == "__main__":
    main(sys.argv[1:])
