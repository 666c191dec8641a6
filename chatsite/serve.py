"""daphne, stopping gracefully: `python -m chatsite.serve` takes daphne's own arguments.

On SIGTERM or SIGINT daphne alone cancels every request at once and exits within a second: the
replies being generated are dropped as they are, left `streaming` (their conversations refuse
messages until another process marks them interrupted), and API clients see their stream cut.
This server first stops listening, so a proxy sends new connections to another process; takes no
more replies (a request on a connection already open is refused with 503 and Retry-After, as
when the process is busy); lets the running replies finish for CHAT_SHUTDOWN_GRACE_SECONDS;
stores the rest as interrupted with all their text, which tells the pages and ends the API
streams with their final event; waits briefly for those responses to end; then lets daphne
close what is left (websockets: pages reconnect to another process) and exit. A second signal
cuts the grace period short.

daphne does not send the ASGI lifespan events; the hook is its server's before-shutdown
trigger, `Server.kill_all_applications`, which Twisted waits on before it stops.
"""

import asyncio
import logging
import signal

from daphne.cli import CommandLineInterface  # daphne before Twisted: it installs the reactor
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet import defer

logger = logging.getLogger(__name__)

# After the replies are stored: how long the HTTP responses following them may take to end.
RESPONSES_END_SECONDS = 5.0


class GracefulServer(Server):
    def run(self) -> None:
        self.ports = []
        super().run()

    def listen_success(self, port) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def kill_all_applications(self) -> defer.Deferred:
        return defer.Deferred.fromFuture(asyncio.ensure_future(self._shut_down()))

    async def _shut_down(self) -> None:
        # Imported here: Django is set up by the application, which daphne loads after this.
        from conversations.replies import running

        try:
            for port in self.ports:
                port.stopListening()
            self._on_second_signal(running.shut_down)
            await running.shut_down(grace=settings.CHAT_SHUTDOWN_GRACE_SECONDS)
            responses = [
                details["application_instance"]
                for protocol, details in self.connections.items()
                if not isinstance(protocol, WebSocketProtocol) and "application_instance" in details
            ]
            if responses:
                await asyncio.wait(responses, timeout=RESPONSES_END_SECONDS)
        finally:
            await super().kill_all_applications().asFuture(asyncio.get_running_loop())

    def _on_second_signal(self, shut_down) -> None:
        """A second SIGTERM or SIGINT ends the grace period: the replies are stored now."""
        loop = asyncio.get_running_loop()

        def at_once() -> None:
            logger.info("Stopping again: the replies are stored as interrupted now")
            self.storing_at_once = asyncio.ensure_future(shut_down(grace=0))

        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda number, frame: loop.call_soon_threadsafe(at_once))


class GracefulCommandLineInterface(CommandLineInterface):
    server_class = GracefulServer


if __name__ == "__main__":
    GracefulCommandLineInterface.entrypoint()
