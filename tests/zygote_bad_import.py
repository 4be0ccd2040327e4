"""A module a zygote cannot preload and then serve: ``$ZYGOTE_TEST_BAD`` says how it fails.

``crash``: the importing process is killed (as by the OOM killer); ``thread``: it leaves a thread
running, and a fork would not copy it.
"""

import os
import signal
import threading
import time

if os.environ["ZYGOTE_TEST_BAD"] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
else:
    threading.Thread(target=time.sleep, args=(60,), name="left-running", daemon=True).start()
