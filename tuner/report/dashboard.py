"""`tuner dashboard`: the report page on a local HTTP port, rebuilt when the store says the
study changed (`study_fingerprint`).

It answers only requests whose `Host` is a loopback name with its port: a web page the user
visits could otherwise point its own domain at 127.0.0.1 (DNS rebinding) and read the study
as a same-origin page; such a request carries that domain in `Host` and gets 403.
"""
from __future__ import annotations

import errno
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tuner.errors import ConfigError
from tuner.report.page import js_string, render_page
from tuner.store import get_study, open_store, study_fingerprint

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class Dashboard:
    """The report served over HTTP, rebuilt when the study changes. Pages poll /token every
    `refresh_s` seconds and reload when it differs from theirs, so a browser follows a search."""

    def __init__(self, store_url: str, study: str, host: str, port: int, refresh_s: float):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"--port: {port!r} is not a TCP port; allowed: 1 to 65535, or 0 for any free port")
        self.store, self.study, self.refresh_s = open_store(store_url, read_only=True), study, refresh_s
        self._lock = threading.Lock()
        self._token, self._page = None, b""
        self._thread: threading.Thread | None = None
        self.server = None
        try:
            get_study(self.store, study)  # an unknown study fails here, before a port is taken
            self.server = _bind(host, port, self)
            self.page()
        except BaseException:
            if self.server is not None:
                self.server.server_close()
            self.store.close()
            raise
        self.url = f"http://{host}:{self.server.server_port}/"
        self.hosts = {f"{name}:{self.server.server_port}" for name in {*LOOPBACK_NAMES, host.lower()}}

    def answers_to(self, host_header: str | None) -> bool:
        """True for `Host: localhost:PORT` (or 127.0.0.1, [::1], the bound host) with the served port."""
        if host_header is None:
            return False
        host = host_header.strip().lower()
        if ":" not in host.rsplit("]", 1)[-1]:  # no port given: HTTP's default
            host += ":80"
        return host in self.hosts

    def token(self) -> str:
        return study_fingerprint(self.store, self.study)

    def page(self) -> bytes:
        with self._lock:
            token = self.token()
            if token != self._token:
                live = _LIVE_SCRIPT % {"token": js_string(token), "every_ms": int(self.refresh_s * 1000)}
                self._page = render_page(self.store, self.study, live)[0].encode("utf-8")
                self._token = token
            return self._page

    def serve_forever(self) -> None:
        """Serves until shutdown() (from another thread) or Ctrl-C; then releases port and store."""
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()
            self.store.close()

    def start(self) -> "Dashboard":
        """Serves from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="tuner-dashboard", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stops serving (from another thread), releases port and store."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
        else:
            self.server.server_close()
            self.store.close()


_LIVE_SCRIPT = """<script>
(function () {
  var token = %(token)s, every = %(every_ms)d;
  function check() {
    fetch("token", {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(function (d) { if (d.token !== token) location.reload(); })
      .catch(function () {}).finally(function () { setTimeout(check, every); });
  }
  setTimeout(check, every);
})();
</script>"""


def _bind(host: str, port: int, dashboard: Dashboard) -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer((host, port), _handler(dashboard))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port}: already in use on {host} (another dashboard?); choose another "
                              "--port, or 0 for any free port") from None
        raise ConfigError(f"--port {port}: cannot listen on {host}: {exc.strerror or exc}; allowed: a free port "
                          "1 to 65535 this user may open (below 1024 needs root), or 0 for any free port") from None


def _handler(dashboard: Dashboard):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            if not dashboard.answers_to(self.headers.get("Host")):
                self._send(403, "text/plain; charset=utf-8",
                           f"403: this dashboard answers only to {', '.join(sorted(dashboard.hosts))}".encode())
                return
            try:
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", dashboard.page())
                elif path == "/token":
                    self._send(200, "application/json", json.dumps({"token": dashboard.token()}).encode())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found")
            except Exception as exc:  # noqa: BLE001  (one line to the browser; the next poll retries)
                self._send(500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}".splitlines()[0].encode())

        def _send(self, code: int, kind: str, body: bytes):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the CLI prints the URL once
            pass

    return Handler


def serve_dashboard(store_url: str, study: str, port: int = 8765, host: str = "127.0.0.1",
                    refresh_s: float = 5) -> Dashboard:
    """A dashboard bound to host:port (port 0: any free port), not yet serving: call
    `serve_forever()` (blocks) or `start()` (background thread), and `shutdown()` to stop."""
    return Dashboard(store_url, study, host, port, refresh_s)
