"""HTTPS in the guest: recipes/ca-paths.toml links OPENSSLDIR/cert.pem to live-bootstrap's CA
bundle (/etc/ssl/certs/ca-certificates.crt), so OpenSSL's default verify paths trust it.

Real TLS: the test makes a CA and a server certificate for 127.0.0.1 with this machine's
``openssl``, serves HTTPS on 127.0.0.1, and lays the guest out in a private mount namespace
(root only): a fake /etc/ssl holding the test CA as the bundle (as live-bootstrap's
ca-certificates installs it) and, over this machine's OPENSSLDIR, the directory the recipe's
install phase made. The clients are this machine's OpenSSL users (Python's ssl, ``openssl
s_client``; ``-m slow``: the sandbox-built GNU wget with the toolkit's own command line, and a Go
program, which needs no link), with
an environment that holds no SSL_CERT_FILE. The same layout without the recipe's link must
fail, so the link is what makes them trust the server.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO, Project, find_go, real_project
from tests.httpserver import serve

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("openssl"),
    reason="the guest's layout is mounted in a private mount namespace: needs root, unshare, "
    "openssl",
)
PAYLOAD = b"azl-bootstrap over https\n" * 100


def openssl_dir() -> str:
    out = subprocess.run(["openssl", "version", "-d"], capture_output=True, text=True).stdout
    return out.split('"')[1]  # OPENSSLDIR: "/usr/lib/ssl"


def make_pki(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca.pem, srv.pem, srv.key)."""
    d.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=azl-bootstrap test CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext")  # fmt: skip
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


def guest_ssl(tmp: Path, ca: Path) -> Path:
    """/etc/ssl as live-bootstrap's ca-certificates-3.99 installs it, holding the test CA."""
    etc = tmp / "etc-ssl"
    (etc / "certs").mkdir(parents=True)
    shutil.copy(ca, etc / "certs" / "ca-certificates.crt")
    (etc / "certs.pem").symlink_to("/etc/ssl/certs/ca-certificates.crt")
    return etc


def recipe_stage(tmp: Path) -> Path:
    """Run the recipe's install phase into a scratch DESTDIR; return its OPENSSLDIR."""
    script = tomllib.loads((REPO / "recipes" / "ca-paths.toml").read_text())["script"]["install"]
    dest = tmp / "stage"
    env = {"PATH": os.environ["PATH"], "DESTDIR": str(dest), "PREFIX": "/usr"}
    r = subprocess.run(["sh", "-e", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sslroot = dest / openssl_dir().lstrip("/")
    assert os.readlink(sslroot / "cert.pem") == "/etc/ssl/certs/ca-certificates.crt"
    return sslroot


def in_guest_layout(etc_ssl: Path, openssldir: Path, argv: list[str], timeout: float = 120):
    """Run ``argv`` with etc_ssl over /etc/ssl and openssldir over this machine's OPENSSLDIR,
    in a private mount namespace, with a clean environment (no SSL_CERT_FILE/DIR)."""
    script = (
        f'mount --bind "{etc_ssl}" /etc/ssl && mount --bind "{openssldir}" "{openssl_dir()}"'
        ' && exec env -i PATH=/usr/bin:/bin "$@"'
    )
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def https(tmp_path: Path):
    ca, cert, key = make_pki(tmp_path / "pki")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with serve({"f.txt": PAYLOAD}, tls=ctx) as srv:
        yield srv, guest_ssl(tmp_path, ca)


PY_FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())"


def test_openssl_programs_trust_the_bundle_through_the_recipes_link(https, tmp_path: Path) -> None:
    srv, etc_ssl = https
    url = srv.url("f.txt")
    openssldir = recipe_stage(tmp_path)
    python = sys.executable if Path(sys.executable).resolve().is_file() else "python3"
    r = in_guest_layout(etc_ssl, openssldir, [python, "-c", PY_FETCH, url])
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == PAYLOAD
    # openssl's own client, verifying with the default paths only
    connect = ["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-verify_return_error",
               "-brief"]  # fmt: skip
    r = in_guest_layout(etc_ssl, openssldir, ["sh", "-c", '"$@" </dev/null', "sh", *connect])
    assert r.returncode == 0, r.stderr
    assert "Verification: OK" in r.stderr

    # the same layout without the link: nothing is trusted
    bare = tmp_path / "bare-openssldir"
    bare.mkdir()
    r = in_guest_layout(etc_ssl, bare, [python, "-c", PY_FETCH, url])
    assert r.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
    r = in_guest_layout(etc_ssl, bare, ["sh", "-c", '"$@" </dev/null', "sh", *connect])
    assert r.returncode != 0, r.stderr


@pytest.mark.slow  # building net/http takes a minute or more on 2 busy cores
def test_go_reads_the_bundle_without_the_link(https, tmp_path: Path) -> None:
    """Go's crypto/x509 reads /etc/ssl/certs/ca-certificates.crt itself (the toolkit's go get
    and go build): no link, no SSL_CERT_FILE needed."""
    go = find_go()
    if go is None:
        pytest.skip("no Go here (./setup.sh --with-go installs Debian's golang-1.22-go)")
    srv, etc_ssl = https
    src = tmp_path / "fetch"
    src.mkdir()
    (src / "main.go").write_text(
        'package main\nimport ("io"; "net/http"; "os")\n'
        "func main() { r, err := http.Get(os.Args[1]); if err != nil { panic(err) }\n"
        "io.Copy(os.Stdout, r.Body) }\n"
    )
    (src / "go.mod").write_text("module fetch\ngo 1.20\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GOCACHE": str(tmp_path / "gocache"),
           "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}  # fmt: skip
    r = subprocess.run([go, "build", "-o", "fetch", "."], cwd=src, env=env, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    bare = tmp_path / "bare-openssldir"
    bare.mkdir()
    r = in_guest_layout(etc_ssl, bare, [str(src / "fetch"), srv.url("f.txt")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == PAYLOAD


@pytest.mark.slow
@pytest.mark.network
def test_sandbox_wget_fetches_the_toolkit_way(https, tmp_path: Path, archive: str) -> None:
    """The sandbox's GNU wget (built against this machine's OpenSSL, as the guest's against
    live-bootstrap's) with bypass_container.sh's command line."""
    project: Project = real_project(tmp_path / "proj", "wget")
    r = project.doit("wget", timeout=3600)
    assert r.code == 0, r.out + r.err
    wget = project.installed("bin/wget")
    srv, etc_ssl = https
    listing = tmp_path / "toolchain-local-wget-list"
    listing.write_text(srv.url("f.txt") + "\n")
    sources = tmp_path / "sources"
    line = ["-nv", "--no-clobber", "--timeout=30", "--continue", f"--input-file={listing}",
            f"--directory-prefix={sources}"]  # fmt: skip
    bare = tmp_path / "bare-openssldir"
    bare.mkdir()
    r = in_guest_layout(etc_ssl, bare, [str(wget), *line])
    assert r.returncode != 0 and not (sources / "f.txt").exists(), r.stderr
    r = in_guest_layout(etc_ssl, recipe_stage(tmp_path), [str(wget), *line])
    assert r.returncode == 0, r.stderr
    assert (sources / "f.txt").read_bytes() == PAYLOAD
