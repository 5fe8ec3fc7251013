"""A y-websocket peer written with Python's `websockets` library (not this
project's code), which offers permessage-deflate by default. Driven from a
Rust test.

Usage: deflate_client.py <url> <update-hex> <expected-hex>

Connects, checks that the server agreed to permessage-deflate, reads
messages until sync step 2 arrives and checks that it holds the expected
bytes (so the server's compressed frames inflated to the document), then
sends the given Yjs update as a sync update message (compressed by the
library) and closes normally. Prints JSON: the agreed extension and the
sizes seen.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


def var_uint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def main(url, update, expected):
    async with connect(url, compression="deflate", max_size=None) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        if not extensions.startswith("permessage-deflate"):
            raise SystemExit(f"permessage-deflate not agreed: {extensions!r}")
        step2 = None
        while step2 is None:
            message = await asyncio.wait_for(ws.recv(), 20)
            if isinstance(message, bytes) and message[:2] == b"\x00\x01":
                step2 = message
        if expected not in step2:
            raise SystemExit("sync step 2 does not hold the expected bytes")
        # A sync update message: [0 = sync, 2 = update, var-length update].
        await ws.send(b"\x00\x02" + var_uint(len(update)) + update)
        await asyncio.sleep(0.5)
        print(json.dumps({"extensions": extensions, "step2": len(step2)}))


if __name__ == "__main__":
    url, update_hex, expected_hex = sys.argv[1:4]
    asyncio.run(main(url, bytes.fromhex(update_hex), bytes.fromhex(expected_hex)))
