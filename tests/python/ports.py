"""Free ports for the servers the tests start."""

import socket

_GIVEN = set()


def free_port():
    """A port nobody listens on now that this process has not handed out before: the
    kernel may give a just-released port again, and tfgate refuses --port equal to
    --rest_api_port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
