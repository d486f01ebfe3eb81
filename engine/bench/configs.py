"""The configurations the benchmarks give the programs they run (pure, no
root): nginx for the HTTP rows' real servers, HAProxy as a balancer, and
nftables for the kernel's own NAT (the HTTP and the packet-rate rows).
"""

__all__ = ["SIZE_BYTES", "NGINX_SETTINGS", "nginx_conf", "haproxy_conf",
           "nft_ruleset"]

# the files nginx serves, by the name the HTTP rows ask for
SIZE_BYTES = {"1k": 1024, "100k": 100 * 1024, "1m": 1024 * 1024}

_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server {{
        listen {port} reuseport backlog=4096;
        root {www};
        location / {{ }}
    }}
}}
"""

NGINX_SETTINGS = {"worker_processes": 1, "sendfile": "on",
                  "tcp_nopush": "on", "tcp_nodelay": "on",
                  "access_log": "off", "keepalive_requests": 10_000_000,
                  "files": dict(SIZE_BYTES)}


def nginx_conf(run: str, www: str, port: int) -> str:
    """nginx's config: one worker, files from ``www``, state in ``run``."""
    return _NGINX_CONF.format(run=run, www=www, port=port)


def haproxy_conf(mode: str, vip: str, reals: list, port: int,
                 cpu: int) -> str:
    """A minimal HAProxy config: one thread mapped to ``cpu``, ``mode``
    "tcp" or "http", round robin over ``reals`` (addresses, same port)."""
    lines = ["global", "    nbthread 1", f"    cpu-map 1/1 {cpu}",
             "    maxconn 4096", "defaults", f"    mode {mode}",
             "    timeout connect 5s", "    timeout client 60s",
             "    timeout server 60s"]
    if mode == "http":
        lines += ["    option http-keep-alive", "    http-reuse always"]
    lines += ["frontend fe", f"    bind {vip}:{port}",
              "    default_backend be", "backend be", "    balance roundrobin"]
    lines += [f"    server r{i} {addr}:{port}"
              for i, addr in enumerate(reals, 1)]
    return "\n".join(lines) + "\n"


def nft_ruleset(table: str, vip: str, reals: list, port: int,
                proto: str = "tcp") -> str:
    """Kernel NAT, table ``table``: DNAT of ``vip``:``port`` (``proto``
    "tcp" or "udp") to the one real, or to the ``reals`` in turn (numgen
    inc); conntrack undoes it on the way back."""
    if len(reals) == 1:
        to = reals[0]
    else:
        spread = ", ".join(f"{i} : {addr}" for i, addr in enumerate(reals))
        to = f"numgen inc mod {len(reals)} map {{ {spread} }}"
    return (f"table ip {table} {{\n"
            f"  chain pre {{\n"
            f"    type nat hook prerouting priority dstnat; policy accept;\n"
            f"    ip daddr {vip} {proto} dport {port} dnat to {to}\n"
            f"  }}\n}}\n")
