"""DVC stage `ensemble`: a thin entry point; `segbench ensemble --help` lists its arguments."""

import sys

from segbench.commands.ensemble import main

if __name__ == "__main__":
    main(sys.argv[1:])
