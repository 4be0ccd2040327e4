"""DVC stage `train`: a thin entry point; `segbench train --help` lists its arguments."""

import sys

from segbench.commands.train import main

if __name__ == "__main__":
    main(sys.argv[1:])
