"""A minimal webhook receiver that verifies signatures (docs/webhooks.md).

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python docs/webhook_receiver.py 8080

Acknowledges each event once it is verified, and each repeat of an event it has seen
(same webhook-id) without processing it again."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen: set[str] = set()  # use a database table with a unique key in a real receiver


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = webhook.verify(body, headers)
        except WebhookVerificationError:
            self.send_response(400)
            self.end_headers()
            return
        if headers["webhook-id"] not in seen:
            print(json.dumps({"id": event["id"], "type": event["type"]}), flush=True)  # process it here
            seen.add(headers["webhook-id"])
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", int(sys.argv[1]) if len(sys.argv) > 1 else 8080), Receiver).serve_forever()  # noqa: S104
