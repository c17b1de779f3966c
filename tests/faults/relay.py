"""A TCP relay: `python -m tests.faults.relay LISTEN_HOST:PORT TARGET_HOST:PORT [--delay-ms=N]`.

The network fault test runs one inside a network namespace and one on the host, so that the
worker's traffic to a server on this machine's loopback crosses a veth link whose loss and
partitions the test controls. `--delay-ms` holds every chunk that long in each direction
(pipelined, order kept): propagation latency, as netem would add it. Prints "ready" once it
listens."""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(Exception):
            writer.close()


async def main(listen: str, target: str, delay: float) -> None:
    listen_host, listen_port = listen.rsplit(":", 1)
    target_host, target_port = target.rsplit(":", 1)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.wait_for(
                asyncio.open_connection(target_host, int(target_port)), timeout=30
            )
        except (OSError, TimeoutError):
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w, delay), pipe(server_r, client_w, delay))

    server = await asyncio.start_server(relay, listen_host, int(listen_port))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    delay_ms = next(
        (float(a.split("=", 1)[1]) for a in sys.argv[3:] if a.startswith("--delay-ms=")), 0.0
    )
    asyncio.run(main(sys.argv[1], sys.argv[2], delay_ms / 1000))
