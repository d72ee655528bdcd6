"""A loopback SMTP server for the benchmarks, in its own process so that it does not
share a GIL with the load generator: prints "<tag> <time.time()>" per accepted email.

    python bench/smtp_sink.py PORT
"""

import re
import sys
import threading
import time

from aiosmtpd.controller import Controller

TAG = re.compile(rb"bench-(\d+)-end")


class Handler:
    async def handle_DATA(self, server, session, envelope):
        now = time.time()
        match = TAG.search(envelope.original_content)
        if match:
            print(match.group(1).decode(), f"{now:.6f}", flush=True)
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    threading.Event().wait(float(sys.argv[2]) if len(sys.argv) > 2 else 3600)
    controller.stop()
