"""Python's http.server (HTTPServer, ThreadingHTTPServer) and an asyncio echo server, each
with its clients in the same process; output is the same natively and under karn."""

import asyncio
import http.server
import socket
import threading
import urllib.request


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"path={self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(cls: type, family: int, host: str) -> None:
    server_cls = type("S", (cls,), {"address_family": family})
    server = server_cls((host, 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    where = f"[{host}]" if family == socket.AF_INET6 else host
    results: list[str] = []

    def get(i: int) -> None:
        with urllib.request.urlopen(f"http://{where}:{port}/item/{i}", timeout=30) as r:
            results.append(r.read().decode().strip())

    clients = [threading.Thread(target=get, args=(i,)) for i in range(8)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    server.shutdown()
    server.server_close()
    print(cls.__name__, host, sorted(results))


async def echo_main() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client(i: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"message {i} ".encode() * 100)
        writer.write_eof()
        data = await reader.read()
        writer.close()
        return f"{i}:{len(data)}:{data[:12].decode()}"

    print("asyncio echo", await asyncio.gather(*(client(i) for i in range(10))))
    server.close()
    await server.wait_closed()


def udp() -> None:
    a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    a.bind(("::1", 0))
    b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    b.sendto(b"over ipv6", a.getsockname())
    data, src = a.recvfrom(100)
    a.sendto(data[::-1], src)
    print("udp6", data, b.recvfrom(100)[0], src[0])


serve(http.server.HTTPServer, socket.AF_INET, "127.0.0.1")
serve(http.server.ThreadingHTTPServer, socket.AF_INET, "127.0.0.1")
serve(http.server.ThreadingHTTPServer, socket.AF_INET6, "::1")
asyncio.run(echo_main())
udp()
print(sorted({ai[0].name for ai in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)}))
a, b = socket.socketpair()
a.sendall(b"pair")
print("socketpair", b.recv(10))
