#!/usr/bin/python3
"""A bearer-token server for dstack's test registries (the docker "token authentication" protocol).

docker-registry (distribution 2.8) trusts tokens signed by a key whose certificate is in its
`auth.token.rootcertbundle`; the JWT header names that key by `kid`, the libtrust fingerprint of the public key
(distribution also accepts an `x5c` chain; `--header x5c` sends that instead).

Policy:
  - repositories under `public/` can be pulled anonymously;
  - the user in --user (default alice:wonderland) may pull and push everything, and list the catalog;
  - a wrong user or password gets 401; an anonymous request for anything else gets a token without that access
    (as Docker Hub does), so the registry then answers 401 itself.

Served at GET /token (?service=&scope=&account=, optional Basic auth) and POST /token (OAuth2 password grant,
and the refresh-token grant for the identity token in --refresh-token, which stands for the --user; a wrong one
gets 400 invalid_grant, as RFC 6749 says).
The listening port is written to --port-file once the server is up. Requests are logged to --log, one JSON line
each, never with a password.

Standard library plus Debian's python3-jwt and python3-cryptography. Run with /usr/bin/python3 (not a pyenv
interpreter that lacks those modules).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

# distribution adds this much leeway to `exp` (registry/auth/token/token.go: `Leeway = 60 * time.Second`).
REGISTRY_LEEWAY_SECONDS = 60


def libtrust_key_id(public_key):
    """The libtrust fingerprint distribution uses as a key id: base32 of the first 240 bits of the SHA-256 of
    the DER SubjectPublicKeyInfo, in 12 groups of 4 separated by colons."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def parse_scope(scope):
    """`repository:name:pull,push` -> (type, name, [actions]); names may contain colons only in the type
    `repository(plugin)` form, which we do not need: split from both ends."""
    kind, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return kind, name, [a for a in actions.split(",") if a]


class Config:
    def __init__(self, args):
        with open(args.signing_key, "rb") as f:
            self.key_pem = f.read()
        with open(args.signing_cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.kid = libtrust_key_id(cert.public_key())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.header_mode = args.header
        self.issuer = args.issuer
        self.service = args.service
        self.expires_in = args.expires_in
        self.compensate_leeway = args.compensate_leeway
        self.refresh_token = args.refresh_token
        user, _, password = args.user.partition(":")
        self.user, self.password = user, password
        self.log_path = args.log
        self.log_lock = threading.Lock()

    def log(self, record):
        record["time"] = round(time.time(), 3)
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def allowed_actions(config, account, kind, name, requested):
    if account == config.user:
        return list(requested)
    if account is None and kind == "repository" and name.startswith("public/"):
        return [a for a in requested if a == "pull"]
    return []


def make_token(config, account, scopes):
    now = int(time.time())
    access = []
    for scope in scopes:
        try:
            kind, name, actions = parse_scope(scope)
        except ValueError:
            continue
        access.append({"type": kind, "name": name, "actions": allowed_actions(config, account, kind, name, actions)})
    exp = now + config.expires_in
    if config.compensate_leeway:
        # The registry accepts a token until exp + 60 s; tests of renewal need it refused after expires_in.
        exp -= REGISTRY_LEEWAY_SECONDS
    claims = {
        "iss": config.issuer,
        "sub": account or "",
        "aud": config.service,
        "exp": exp,
        "nbf": now - 1,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    headers = {"kid": config.kid} if config.header_mode == "kid" else {"x5c": config.x5c}
    token = jwt.encode(claims, config.key_pem, algorithm="RS256", headers=headers)
    issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return token, access, issued


class Handler(BaseHTTPRequestHandler):
    server_version = "dstack-test-token/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the request log below replaces the default stderr lines
        pass

    def reply(self, status, body, extra_headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def basic_credentials(self):
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ("", "")
        return (user, password)

    def handle_token(self, params, creds, grant=None):
        config = self.server.config
        path = urlparse(self.path).path
        record = {"method": self.command, "path": path, "service": params.get("service", [""])[0],
                  "scope": params.get("scope", []), "user": creds[0] if creds else None, "grant": grant}
        if path != "/token":
            record["status"] = 404
            config.log(record)
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
        account = None
        if creds is not None:
            if creds != (config.user, config.password):
                record["status"] = 401
                config.log(record)
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]},
                                  [("WWW-Authenticate", 'Basic realm="dstack-test-token"')])
            account = creds[0]
        scopes = []
        for s in params.get("scope", []):
            scopes.extend(s.split(" "))
        token, access, issued = make_token(config, account, [s for s in scopes if s])
        record.update(status=200, account=account, granted=access, expires_in=config.expires_in)
        config.log(record)
        body = {"token": token, "access_token": token, "expires_in": config.expires_in, "issued_at": issued}
        return self.reply(200, body)

    def do_GET(self):
        params = parse_qs(urlparse(self.path).query)
        self.handle_token(params, self.basic_credentials())

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        creds = self.basic_credentials()
        grant = form.get("grant_type", [""])[0]
        if grant == "password":
            creds = (form.get("username", [""])[0], form.get("password", [""])[0])
        if grant == "refresh_token":
            config = self.server.config
            token = form.get("refresh_token", [""])[0]
            if not config.refresh_token or token != config.refresh_token or not form.get("client_id", [""])[0]:
                config.log({"method": "POST", "path": urlparse(self.path).path, "grant": grant,
                            "scope": form.get("scope", []), "status": 400})
                return self.reply(400, {"error": "invalid_grant"})
            creds = (config.user, config.password)
        self.handle_token(form, creds, grant)


class TlsServer(ThreadingHTTPServer):
    """Does the TLS handshake in the request's thread, so a client that stalls or rejects our certificate
    never blocks the accept loop."""

    def finish_request(self, request, client_address):
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        # Clients that hang up mid-request are normal in tests; keep stderr for real failures.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cert", required=True, help="TLS certificate (PEM)")
    p.add_argument("--key", required=True, help="TLS key (PEM)")
    p.add_argument("--signing-key", required=True, help="RSA key that signs tokens (PEM)")
    p.add_argument("--signing-cert", required=True, help="its certificate, as in the registry's rootcertbundle")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--user", default="alice:wonderland", help="USER:PASSWORD allowed everything")
    p.add_argument("--refresh-token", default="", help="an identity token that stands for --user")
    p.add_argument("--expires-in", type=int, default=300, help="token lifetime in seconds")
    p.add_argument("--compensate-leeway", action="store_true",
                   help="set exp 60 s early so the registry refuses the token after --expires-in seconds")
    p.add_argument("--header", choices=["kid", "x5c"], default="kid", help="how the JWT names its key")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="write the listening port here when ready")
    p.add_argument("--log", default=os.devnull, help="request log (JSON lines)")
    args = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server = TlsServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.config = Config(args)
    server.tls = ctx
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.rename(tmp, args.port_file)
    print(f"token server listening on https://127.0.0.1:{port}/token", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
