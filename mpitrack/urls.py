"""Server URLs as they may appear in logs and messages: never with a password.

A password can sit in three places of a PostgreSQL or Redis URL, and in one
of a libpq key=value string: ``scheme://user:PASSWORD@host``,
``scheme://host/db?password=PASSWORD`` (percent-encoded or not), and
``password=PASSWORD`` (quoted or not). `redact_url` hides every form;
`redact_text` also scrubs a URL's password from any text (a driver's error
message may quote it), in its raw and its percent-decoded spelling.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

_HIDDEN = "***"
# key=value DSN: the password key's value is a bare word or a single-quoted string
# (backslash escapes inside the quotes).
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
# A query parameter: password=... up to the next & or #.
_QUERY_PASSWORD = re.compile(r"((?:^|[?&])password=)([^&#]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL (or key=value DSN) with every password replaced, for logs and errors."""
    if "://" not in url:
        return _DSN_PASSWORD.sub(rf"\1{_HIDDEN}", url)
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + _HIDDEN
        netloc = f"{userinfo}@{host}"
    head, question, query = tail.partition("?")
    if question:
        query = _QUERY_PASSWORD.sub(rf"\1{_HIDDEN}", query)
        tail = head + question + query
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def url_secrets(url: str) -> list[str]:
    """The passwords a URL or DSN holds, each as written and percent-decoded."""
    found: list[str] = []
    if "://" not in url:
        for match in _DSN_PASSWORD.finditer(url):
            value = match.group(2)
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found.append(value)
    else:
        rest = url.partition("://")[2]
        netloc, _, tail = rest.partition("/")
        userinfo = netloc.rpartition("@")[0] if "@" in netloc else ""
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        query = tail.partition("?")[2].partition("#")[0]
        found += [m.group(2) for m in _QUERY_PASSWORD.finditer(query)]
        try:
            parts = urlsplit(url)
            found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
        except ValueError:
            pass
    spelled = {s for value in found for s in (value, unquote(value)) if s}
    return sorted(spelled, key=len, reverse=True)


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every password of ``urls`` replaced (a short password too: a
    mangled message is better than a leaked secret)."""
    for url in urls:
        if url:
            for secret in url_secrets(url):
                text = text.replace(secret, _HIDDEN)
    return text


_SCHEMES = {
    "database": ("postgresql", "postgres"),
    "redis": ("redis", "rediss", "unix"),
}


def url_problem(url: str, kind: str) -> str | None:
    """What is wrong with a ``database`` or ``redis`` URL that no connection attempt
    should find out (a scheme, a port), or None. Never quotes a password."""
    schemes = _SCHEMES[kind]
    if "://" not in url:
        if kind == "redis":
            return f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
        ports = re.findall(r"(?:^|\s)port\s*=\s*'?([^\s']*)", url)
    else:
        scheme = url.partition("://")[0].lower()
        if scheme not in schemes:
            return f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
        netloc = url.partition("://")[2].partition("/")[0].partition("?")[0]
        hosts = netloc.rpartition("@")[2].split(",")
        ports = [host.rpartition(":")[2] for host in hosts if ":" in host.lstrip("[")]
        ports = [p for p in ports if not p.endswith("]")]  # [::1] without a port
        ports += re.findall(r"(?:^|[?&])port=([^&#]*)", url.partition("?")[2])
    for port in ports:
        for one in port.split(","):
            if not (one.isdigit() and 1 <= int(one) <= 65535):
                return f"port {one or '(empty)'} is not a port number (1..65535)"
    return None
