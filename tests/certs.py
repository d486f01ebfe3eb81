"""A self-signed certificate for the TLS tests (HAProxy's tls_cert, curl's
--cacert), made with openssl: an EC key, quick to make."""

import subprocess


def self_signed(d, name="pacs.test"):
    """Write cert.pem, key.pem and both.pem (certificate then key: what
    HAProxy's `crt` takes) for `name` into directory d (a Path); returns
    the three paths as str, in that order."""
    cert, key, both = d / "cert.pem", d / "key.pem", d / "both.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext",
                    f"subjectAltName=DNS:{name}", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    both.write_text(cert.read_text() + key.read_text())
    return str(cert), str(key), str(both)
