"""The lab itself works: namespaces are created, linked, and removed."""
import os

from lab import SERVER4, SERVER6, Lab, tcp_connect, tcp_listen, udp_exchange, udp_server


def test_lab_removes_its_namespaces():
    with Lab() as lab:
        ns = lab.netns("x")
        assert os.path.exists(f"/run/netns/{ns}")
    assert not os.path.exists(f"/run/netns/{ns}")


def test_pair_delivers_tcp_and_udp(pair):
    client, server = pair
    listener = tcp_listen(server, SERVER4, 8080)
    try:
        assert tcp_connect(client, SERVER4, 8080)
        assert not tcp_connect(client, SERVER4, 8081)  # RST: nobody listens
    finally:
        listener.close()
    srv = udp_server(server, SERVER6, 5353)
    try:
        assert udp_exchange(client, srv, SERVER6, 5353) == (True, True)
    finally:
        srv.close()
