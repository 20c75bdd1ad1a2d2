#!/usr/bin/env python3
"""Third-party HL7 peers for the relay's interop tests (loopback only).

  peers.py pyhl7-server                 python-hl7 (asyncio MLLP) receiver; ACKs every message
  peers.py hl7apy-server                hl7apy MLLPServer receiver (closes after each message)
  peers.py txhl7-server                 txHL7 (Twisted) MLLPFactory receiver; ACKs every message
  peers.py pyhl7-client --port P [--ca F --cert F --key F] FILE...
                                        python-hl7 sender: one connection, one ACK per file

Servers print "LISTENING <port>" once ready, then "RECV <sha256> <MSH-10>" per message (the
SHA-256 of the bytes between the frame's start and end bytes). python-hl7's server prints
"UNPARSED <error>" after a message it cannot parse, and closes without an ACK.
The client prints "ACK <MSA-1> <MSA-2>" per message and exits 0 only if every ACK is AA/CA
and names its message's MSH-10.
"""
import argparse
import asyncio
import hashlib
import ssl
import sys
import threading

_stdout_lock = threading.Lock()


def say(line: str) -> None:
    """Prints one whole line: hl7apy serves each connection on its own thread, and print()
    writes the text and the newline separately, so lines of two threads could interleave."""
    with _stdout_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def control_id(raw: str) -> str:
    header = raw.split("\r")[0]
    fields = header.split(header[3])
    return fields[9] if len(fields) > 9 else ""


def pyhl7_server() -> None:
    import hl7
    from hl7.mllp import start_hl7_server

    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                # The block as it arrived (readmessage() would parse it and lose the bytes),
                # then parsed as readmessage() parses it.
                block = await reader.readblock()
                raw = block.decode("utf-8", "surrogateescape")
                say(f"RECV {hashlib.sha256(block).hexdigest()} {control_id(raw)}")
                try:
                    ack = str(hl7.parse(raw).create_ack())
                except Exception as error:  # python-hl7 cannot read it: no ACK, as its server
                    say(f"UNPARSED {type(error).__name__}")
                    break
                writer.writeblock(ack.encode("utf-8", "surrogateescape"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def main():
        server = await start_hl7_server(handle, host="127.0.0.1", port=0, encoding="utf-8",
                                        limit=16 * 1024 * 1024)
        say(f"LISTENING {server.sockets[0].getsockname()[1]}")
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def hl7apy_server() -> None:
    from hl7apy.mllp import AbstractHandler, MLLPServer

    class Ack(AbstractHandler):
        def reply(self):
            raw = self.incoming_message
            say(f"RECV {hashlib.sha256(raw.encode()).hexdigest()} {control_id(raw)}")
            header = raw.split("\r")[0]
            fs = header[3]
            f = header.split(fs)
            get = lambda n: f[n - 1] if len(f) >= n else ""
            msh = fs.join(["MSH", get(2), get(5), get(6), get(3), get(4), "", "", "ACK",
                           "HL7APY-" + get(10), "P", get(12)])
            return "\x0b" + msh + "\r" + fs.join(["MSA", "AA", get(10)]) + "\r\x1c\r"

    class Every(dict):
        def __getitem__(self, key):
            return (Ack,)

    server = MLLPServer("127.0.0.1", 0, Every(), timeout=10)
    say(f"LISTENING {server.server_address[1]}")
    server.serve_forever()


def txhl7_server() -> None:
    from twisted.internet import defer, reactor
    from txHL7.mllp import MLLPFactory
    from txHL7.receiver import AbstractHL7Receiver

    class Ack(AbstractHL7Receiver):
        def getCodec(self):
            # Bytes that are not UTF-8 survive the round trip instead of failing the decode.
            return "utf-8", "surrogateescape"

        def handleMessage(self, container):
            # txHL7 splits its stream on FS and strips only VT, so every message after a
            # connection's first arrives as "\r\x0bMSH...": the previous frame's trailing CR
            # and this frame's VT. Reported without them, as the bytes the sender framed.
            raw = container.raw_message.lstrip("\r\x0b")
            body = raw.encode("utf-8", "surrogateescape")
            say(f"RECV {hashlib.sha256(body).hexdigest()} {control_id(raw)}")
            # python-hl7's create_ack: MSH swapped, MSH-10 new, "MSA|AA|<MSH-10>".
            return defer.succeed(container.ack())

    port = reactor.listenTCP(0, MLLPFactory(Ack()), interface="127.0.0.1")
    say(f"LISTENING {port.getHost().port}")
    reactor.run()


def pyhl7_client(args) -> int:
    import hl7
    from hl7.mllp import open_hl7_connection

    context = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
        if args.cert:
            context.load_cert_chain(args.cert, args.key)

    async def main() -> bool:
        reader, writer = await asyncio.wait_for(
            open_hl7_connection("127.0.0.1", args.port, ssl=context, encoding="utf-8",
                                limit=16 * 1024 * 1024), 10)
        ok = True
        for path in args.files:
            raw = open(path, "rb").read()
            writer.writeblock(raw)
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 10)
            code, acked = str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))
            say(f"ACK {code} {acked}")
            ok &= code in ("AA", "CA") and acked == control_id(raw.decode())
        writer.close()
        return ok

    return 0 if asyncio.run(main()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["pyhl7-server", "hl7apy-server", "txhl7-server",
                                         "pyhl7-client"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("files", nargs="*")
    args = parser.parse_intermixed_args()
    if args.mode == "pyhl7-server":
        pyhl7_server()
    elif args.mode == "hl7apy-server":
        hl7apy_server()
    elif args.mode == "txhl7-server":
        txhl7_server()
    else:
        sys.exit(pyhl7_client(args))
