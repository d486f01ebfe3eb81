import threading
import urllib.error
import urllib.request

import pytest

from pyfwd.lab.whoami import WhoamiServer


@pytest.fixture
def server():
    srv = WhoamiServer(("127.0.0.1", 0), "real9")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv, path):
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_reports_node_and_addresses(server):
    body = urllib.request.urlopen(url(server, "/"), timeout=5).read().decode()
    port = server.server_address[1]
    assert body.startswith("node=real9 client=127.0.0.1:")
    assert body.rstrip().endswith(f"local=127.0.0.1:{port}")


def test_bytes(server):
    r = urllib.request.urlopen(url(server, "/bytes/200000"), timeout=5)
    assert r.headers["X-Node"] == "real9"
    assert len(r.read()) == 200000


def test_bad_bytes_request(server):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url(server, "/bytes/lots"), timeout=5)
    assert exc.value.code == 400


def test_paced_bytes_take_their_time(server):
    """?rate=R: the server sends R bytes a second at most, whatever the
    client reads (a download that lasts across a failover)."""
    import time
    start = time.monotonic()
    r = urllib.request.urlopen(url(server, "/bytes/300000?rate=600000"),
                               timeout=10)
    assert len(r.read()) == 300000
    assert time.monotonic() - start >= 0.35     # the last chunk at 0.4 s


def test_bad_rate(server):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url(server, "/bytes/10?rate=fast"), timeout=5)
    assert exc.value.code == 400
