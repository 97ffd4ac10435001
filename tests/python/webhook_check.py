"""Checks webhook signatures with the reference implementation of the
Standard Webhooks specification (the `standardwebhooks` package), which
nobody on this project wrote.

  webhook_check.py verify SECRET HEADERS_JSON BODY
      prints {"ok": true, "payload": <the body parsed>} when the delivery's
      headers and body verify against SECRET, else {"ok": false, "error"}
  webhook_check.py sign SECRET MESSAGE_ID TIMESTAMP BODY
      prints {"signature": "v1,..."} for the body sent as MESSAGE_ID at
      TIMESTAMP (Unix seconds)
"""

import datetime
import json
import sys

from standardwebhooks import Webhook


def verify(secret, headers_json, body):
    headers = json.loads(headers_json)
    try:
        payload = Webhook(secret).verify(body, headers)
    except Exception as error:  # the library raises its own WebhookVerificationError
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "payload": payload}


def sign(secret, message_id, timestamp, body):
    at = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.timezone.utc)
    return {"signature": Webhook(secret).sign(message_id, at, body)}


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["verify", secret, headers_json, body]:
            print(json.dumps(verify(secret, headers_json, body)))
        case ["sign", secret, message_id, timestamp, body]:
            print(json.dumps(sign(secret, message_id, timestamp, body)))
        case _:
            sys.exit(__doc__)
