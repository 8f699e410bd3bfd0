"""A TCP proxy between a server process and PostgreSQL that cuts the connection at a
chosen statement: the way to lose a connection exactly before, or during, a COMMIT."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL. Armed with a rule, it cuts the connection
    on which the rule fires: `before` drops the client's bytes that contain `cut_on` and
    closes (the statement never reaches the database); `after` forwards them, swallows
    the answer and closes once the database has had time to act on them. `refuse` closes
    every connection at once."""

    def __init__(self, upstream_port: int = 5432) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.rule: tuple[str, bytes, bytes | None] | None = None
        self.refuse = False
        self.cuts = 0
        self.closing = False
        self.connections: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str, cut_on: bytes, after_seen: bytes | None = None) -> None:
        with self.lock:
            self.rule = (mode, cut_on, after_seen)

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                went_away = self.refuse  # `go_away` ran while this one was being connected
                if not went_away:
                    self.connections.append((client, upstream))
            if went_away:
                self._cut(client, upstream)
                continue
            state = {"seen": b"", "primed": False, "swallow": False}
            threading.Thread(target=self._pump_up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client, state), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                action = self._action(data, state)
                if action == "before":
                    self._cut(client, upstream)
                    return
                if action == "after":
                    state["swallow"] = True
                    upstream.sendall(data)
                    time.sleep(0.5)  # the database commits meanwhile; its answer is lost
                    self._cut(client, upstream)
                    return
                upstream.sendall(data)
        self._cut(client, upstream)

    def _action(self, data: bytes, state: dict) -> str | None:
        with self.lock:
            if self.rule is None:
                return None
            mode, cut_on, after_seen = self.rule
            if after_seen is not None and after_seen in data:
                state["primed"] = True
            if cut_on in data and (after_seen is None or state["primed"]):
                self.rule = None
                self.cuts += 1
                return mode
        return None

    def _pump_down(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if not state["swallow"]:
                    client.sendall(data)
        self._cut(client, upstream)

    @staticmethod
    def _cut(*sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def go_away(self) -> None:
        """The database is gone for whoever connects through this proxy: every connection
        cut, new ones refused until `refuse` is set back to False."""
        with self.lock:
            self.refuse = True
            connections, self.connections = self.connections, []
        for pair in connections:
            self._cut(*pair)

    def close(self) -> None:
        self.closing = True
        self.listener.close()
