"""The sshd stand-in of one compute host of the novaha test stack.

Listens on ADDR:PORT (the host's own loopback address), sends an SSH banner
to each connection and closes it: what novaha's `tcp` signal checks ("the
host's sshd answers"). Killed together with the host's nova-compute and
Consul agent when the test "kills the host".

Usage: sshd_standin.py ADDR PORT
"""

import socket
import sys

addr, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(64)
while True:
    conn, _ = srv.accept()
    try:
        conn.sendall(b"SSH-2.0-novaha-standin\r\n")
    except OSError:
        pass
    finally:
        conn.close()
