"""Talks to public-web's GET /ws with the `websockets` library, a client
nobody on this project wrote.

Over one socket it subscribes to ping responses, sends COUNT pings at once
(all in flight together), collects every answer and every live event, sends
a frame that is not JSON, round-trips a ping/pong, and closes normally. It
prints one JSON object on stdout with what it saw.

Usage: ws_check.py WS_URL TOKEN COUNT
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect

WAIT_SECONDS = 30


async def next_frame(socket):
    return json.loads(await asyncio.wait_for(socket.recv(), WAIT_SECONDS))


async def main(url, token, count):
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers) as socket:
        await socket.send(json.dumps({"subscribe": {
            "id": "pongs",
            "filters": [{"exact": {"type": "PingResponse"}}],
        }}))
        subscribed = await next_frame(socket)

        ids = [f"ws-check-{i}" for i in range(count)]
        for event_id in ids:
            await socket.send(json.dumps(
                {"id": event_id, "type": "PingRequest", "data": {"n": event_id}}))
        answers, events = {}, {}
        while len(answers) < count or len(events) < count:
            frame = await next_frame(socket)
            if "subscription" in frame:
                events[frame["event"]["id"]] = frame
            else:
                answers[frame["id"]] = frame

        await socket.send("not json")
        bad_frame = await next_frame(socket)

        pong = await socket.ping()
        latency = await asyncio.wait_for(pong, WAIT_SECONDS)

        await socket.send(json.dumps({"unsubscribe": "pongs"}))
        unsubscribed = await next_frame(socket)

    print(json.dumps({
        "subscribed": subscribed,
        "answers": answers,
        "events": events,
        "bad_frame": bad_frame,
        "pong_seconds": latency,
        "unsubscribed": unsubscribed,
        "close_code": socket.close_code,
    }))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
