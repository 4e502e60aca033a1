"""moto's server (PyPI `moto[server]`), for the SQS timer queue: speaks the real SQS protocol
and honours per-message DelaySeconds. Prints `READY <port>` once it accepts connections and runs
until killed."""

import signal
import socket
import sys
import threading

from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass
    print(f"READY {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
