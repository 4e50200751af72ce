"""The receiver `make stack`'s Alertmanager posts to: each notification (page or ticket)
as one JSON line in a file, so an alert made to fire can be seen arriving.
``python scripts/alert_log.py PORT FILE``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _alert(alert: dict[str, Any]) -> dict[str, Any]:
    """What an on-call reads first: since when, what, why, and where the runbook is."""
    annotations = alert.get("annotations", {})
    return {
        "status": alert.get("status"),
        "starts_at": alert.get("startsAt"),
        "ends_at": alert.get("endsAt"),
        "labels": alert.get("labels", {}),
        "summary": annotations.get("summary"),
        "description": annotations.get("description"),
        "runbook_url": annotations.get("runbook_url"),
    }


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            notification = json.loads(body or b"{}")
            line = {
                "received_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "receiver": self.path.strip("/"),
                "status": notification.get("status"),
                "alerts": [_alert(a) for a in notification.get("alerts", [])],
            }
            with path.open("a") as log:
                log.write(json.dumps(line) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None  # the file is the log

    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
