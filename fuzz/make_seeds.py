#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/seed-*), from real payload shapes: the Connect
fixtures (tests/fixtures/connect), docs/atlassian.md, the simulator's answers (sim/src), the
specification examples the verifiers' unit tests use, and config/*.toml. Stdlib only.

Run from the repository root: python3 fuzz/make_seeds.py
Inputs with several parts are newline-separated fields (see src/fuzzing/mod.rs).
"""
import base64
import hashlib
import hmac
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
connect = json.loads((ROOT / "tests/fixtures/connect/pyjwt_tokens.json").read_text())


def seeds(target, items):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for index, item in enumerate(items):
        data = item.encode() if isinstance(item, str) else item
        (folder / f"seed-{index:02d}").write_bytes(data)


def lines(*fields):
    return "\n".join(fields)


hook = connect["webhook"]
install = connect["install"]
seeds("connect_jwt", [
    lines("POST", hook["path"], hook["query"], "JWT " + hook["token"], "{}"),
    lines("POST", install["path"], "", "JWT " + install["token"], '{"aud":"https://gatehouse.example.com/atlassian"}'),
    lines("GET", "/atlassian/webhooks/connect/user_removed", "a=1&a=2&b=%20&jwt=" + hook["token"], "", '{"sub":"x"}'),
    lines("post", "/webhooks/connect/group_created/", "", "JWT not.a.token", "{}"),
    lines("PUT", "", "", "Bearer " + hook["token"], "[]"),
])
seeds("jwt_der", [
    hook["token"],
    install["token"],
    (ROOT / "tests/fixtures/connect/install-key.public.pem").read_text(),
    base64.b64decode("".join((ROOT / "tests/fixtures/connect/install-key.public.pem").read_text().splitlines()[1:-1])),
    "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
    "e30.e30.",
])
seeds("qsh", [
    lines("GET", "/", "param=foo", ""),
    lines("POST", "/user", "", ""),
    lines("POST", hook["path"], hook["query"], ""),
    lines("GET", "/path/to/service", "zee_last=param&repeated=parameter%201&first=param&repeated=parameter%202", ""),
    lines("post", "/atlassian/connect/installed/", "", "/atlassian"),
    lines("get", "/gh/a&b/", "b=2&a=x%20y&a=c*d&jwt=abc&z=%7E&e=&q=a+b", "/gh/"),
])

HUB_SECRET = b"fuzz-live-secret-0123456789"
github_body = b"Hello, World!"
jira_body = b'{"timestamp":1718000000000,"webhookEvent":"user_deleted","user":{"accountId":"5b10a2844c20165700ede21g"}}'
seeds("hub_signature", [
    lines("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "", github_body.decode()),
    lines("", "sha256=" + hmac.new(HUB_SECRET, jira_body, hashlib.sha256).hexdigest(), jira_body.decode()),
    lines("sha256=" + hmac.new(HUB_SECRET, jira_body, hashlib.sha256).hexdigest(), "sha1=0000000000000000000000000000000000000000", jira_body.decode()),
    lines("sha256=zz", "", "{}"),
])

seeds("standard_webhooks", [
    lines("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", '{"test": 2432232314}'),
    lines("!msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,Zm9v v2,abc v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", '{"test": 2432232314}'),
    lines("msg_2", "1614265000", "v1,AAAA", '{"type":"user.deactivated","timestamp":"2026-11-29T10:00:00Z","data":{"account_id":"acc-9","email":"a@b.c"}}'),
    lines("msg_3", "-9223372036854775808", "v1,", "{}"),
])
seeds("url_token", ["fuzz-live-secret-0123456789", "fuzz-retired-secret-0123456789", "", "t/abc%2F"])

bodies = [
    '{"timestamp":1718000000000,"userAccountId":"admin-1","user":{"accountId":"5b10","accountType":"atlassian","displayName":"Ann","email":null}}',
    '{"timestamp":1718000000000,"userAccountId":"5b10a2844c20165700ede21g","group":{"name":"confluence-users"}}',
    '{"eventType":"avi:confluence:created:user","eventCreatedDate":"2021-01-20T06:29:21.970Z","user":{"accountId":"712020:0b5c3e1e-1c3c-4e0f-9a9e-2c6d4f0a1b2c"}}',
    '{"eventType":"avi:confluence:deleted:group","eventCreatedDate":"2021-01-20T06:29:21.970Z","group":{"id":"ab1a","name":"example-group"}}',
    '{"event":"user_created","timestamp":1,"user":{"userKey":"k"}}',
    '{"webhookEvent":"user_deleted","user":{"accountId":"a1"}}',
    '{"type":"user.deactivated","timestamp":"2026-11-29T10:00:00Z","data":{"account_id":"acc-9","email":"a@b.c"}}',
    '{"type":"approval.granted","timestamp":1,"data":{"approval_id":"01J"}}',
    '{"event":"user\\u005fcreated","timestamp":"soon","user":{"accountId":7}}',
    '{"alert":{"title":"Suspicious login","id":"a-1"}}',
    '{"user":{"accountId":"../admin"}}',
    '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
]
seeds("normalize", [
    lines("c", "", "", "confluence:fixture-client", bodies[0]),
    lines("chuser_removed", "d1a0a4a6-6e1a-4c8b", "2", "", bodies[1]),
    lines("h", "", "", "", bodies[2]),
    lines("hgroup_removed", "", "", "", bodies[3]),
    lines("uuser_created", "id-1", "", "", bodies[4]),
    lines("h", "", "", "", bodies[5]),
    lines("s", "msg_p5jXN8AQM9LWM0D4loKWxJek", "", "", bodies[6]),
    lines("s", "msg_2", "", "", bodies[7]),
    lines("h", "", "", "", bodies[8]),
    lines("u", "", "", "", bodies[9]),
    lines("cuser_removed", "x" * 200, "", "k" * 80, bodies[10]),
    lines("h", "", "", "", bodies[11]),
])
seeds("connect_lifecycle", [
    json.dumps({"key": "gatehouse", "clientKey": "confluence:acme-client", "sharedSecret": "s" * 32,
                "baseUrl": "https://acme.atlassian.net/wiki", "displayUrl": "https://acme.atlassian.net/wiki",
                "productType": "confluence", "description": "Atlassian Confluence", "eventType": "installed",
                "cloudId": "acme-cloud"}),
    json.dumps({"clientKey": "globex-client", "baseUrl": "https://globex.atlassian.net/wiki", "cloudId": "globex-cloud",
                "eventType": "uninstalled"}),
    json.dumps({"clientKey": "x", "baseUrl": "not a url"}),
])

configs = [(ROOT / "config" / name).read_text() for name in ["default.toml", "production.example.toml", "sim-demo.toml"]]
seeds("config", configs + [
    '[[sources]]\nname = "relay"\nscheme = "standard-webhooks"\nsecrets = [{ id = "1", value = "env:PATH" }]\n',
    'GATEHOUSE__QUEUE__BACKEND=embedded\nGATEHOUSE__SOURCES__0__TOLERANCE_SECONDS=60\n[[sources]]\nname = "hub"\nscheme = "hub-signature"\nsecrets = [{ id = "1", value = "env:PATH" }]\n',
    '[[tenants]]\nname = "acme"\nconfluence_base_url = "https://acme.atlassian.net/wiki"\nauth = { kind = "basic", email = "bot@acme.example", token = "env:PATH" }\n\n[[tenants]]\nname = "globex"\ngateway_base_url = "https://api.atlassian.com"\nauth = { kind = "basic", email = "bot@globex.example", token = "env:PATH", cloud_id = "globex-cloud" }\n',
])

record = {
    "seq": 1, "id": "01JDQ6Z8R3N4W5X6Y7Z8A9B0C1", "time": "2026-05-01T12:00:00.123Z",
    "event_id": "01JDQ6Z8R3N4W5X6Y7Z8A9B0C2", "kind": "executed", "account_id": "5b10a2844c20165700ede21g",
    "handler": "offboard", "action": None, "dry_run": False, "attempt": 1,
    "outcome": {"status": "ok"}, "request_id": "req-1", "warnings": ["group not mapped"],
    "prev_hash": "0" * 64, "hash": "",
}
record2 = dict(record, seq=2, kind="planned", account_id=None, warnings=[], tenant="acme",
               time="2026-05-01T12:00:00.123456789+02:00", outcome={"status": "failed", "error": "boom\u0000\"\\"})
del record2["action"]
seeds("audit_canonical", [json.dumps(record), json.dumps(record2, ensure_ascii=False)])

seeds("scrub_and_hash", [
    lines("hunter2-hunter2", "Ada Lovelace", "GET https://bot:hunter2-hunter2@example.com/?token=abc&x=1 Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw /webhooks/guard/t/sekrit"),
    lines("short", "Grace\u0002Hopper\u0003", "mailed ada@example.com and GRACE@Example.COM, x-api-key: 123456789"),
    lines("", "", "basic dXNlcjpwYXNz password=p4ss&sig=x"),
])

scim_user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:schemas:extension:atlassian-external:1.0"],
             "id": "scim-ada", "userName": "ada@example.com", "externalId": "okta-ada", "active": True,
             "urn:scim:schemas:extension:atlassian-external:1.0": {"atlassianAccountId": "5b10a2844c20165700ede21g"},
             "meta": {"resourceType": "User", "location": "/scim/directory/demo-directory/Users/scim-ada"}}
seeds("scim_response", [
    json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 2, "startIndex": 1,
                "itemsPerPage": 100, "Resources": [scim_user, {"id": "scim-grace", "userName": "grace@example.com"}]}),
    json.dumps({"totalResults": 1, "Resources": [{"id": "g1", "displayName": "confluence-users"}]}),
    json.dumps(scim_user),
    json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "409", "scimType": "uniqueness", "detail": "exists"}),
])
confluence_user = {"type": "known", "accountId": "5b10a2844c20165700ede21g", "accountType": "atlassian", "email": "",
                   "publicName": "Ada", "displayName": "Ada Lovelace", "accountStatus": "active",
                   "_links": {"self": "/wiki/rest/api/user?accountId=5b10a2844c20165700ede21g"}}
seeds("confluence_response", [
    json.dumps({"results": [confluence_user], "start": 0, "limit": 200, "size": 1,
                "_links": {"next": "/wiki/rest/api/group/b3d5/membersByGroupId?start=1&limit=200"}}),
    json.dumps({"results": [{"id": "b3d5e7f9-0000-4000-8000-000000000001", "name": "confluence-users", "type": "group"}], "start": 0, "limit": 25, "size": 1}),
    json.dumps({"results": [dict(confluence_user, accountStatus="inactive")], "_links": {"next": "/wiki/api/v2/users-bulk?cursor=abc%3D&limit=250"}}),
    json.dumps(confluence_user),
    json.dumps({"statusCode": 404, "message": "No user found", "data": {"errors": []}}),
])
event = {"id": "0c0d8e4c-4b7e-4a1e-9e1a-1a2b3c4d5e6f", "type": "events",
         "attributes": {"time": "2022-12-15T00:35:15.890Z", "action": "user_deactivated",
                        "actor": {"id": "5b10ac8d82e05b22cc7d4ef5", "name": "Grace", "email": "grace@example.com"},
                        "context": [{"type": "users", "id": "5b10a2844c20165700ede21g", "attributes": {"email": "ada@example.com"}},
                                    {"type": "groups", "id": "b3d5", "attributes": {"name": "confluence-users"}}],
                        "container": [{"type": "organizations", "id": "demo-org"}], "location": {"ip": "127.0.0.1"}},
         "message": {"content": "Deactivated", "format": "simple"}}
seeds("events_stream_response", [
    json.dumps({"data": [event], "meta": {"next": "cursor-2", "page_size": 1}, "links": {"self": "/admin/v1/orgs/demo-org/events-stream"}}),
    json.dumps({"data": [], "links": {"next": "https://api.atlassian.com/admin/v1/orgs/o/events-stream?cursor=c%3D3"}}),
    json.dumps({"data": [{"id": "e2", "attributes": {"action": "user_added_to_group", "time": "2026-01-01T00:00:00Z"}}]}),
])
seeds("atlassian_answer", [
    lines("120", "", "", "", "", "429", '{"message":"Rate limit exceeded"}'),
    lines("2.5", "2026-09-21T14:14:20Z", "confluence-quota-tenant-based", "0", '</wiki/api/v2/users-bulk?cursor=abc&limit=250>; rel="next"', "429", ""),
    lines("Wed, 21 Oct 2026 07:28:00 GMT", "", "", "10", '<https://x.invalid/a?cursor=1>; rel="prev", <https://x.invalid/a?cursor=2>; rel="next"', "503", "<html>busy</html>"),
    lines("", "", "", "", "", "409", '{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"User exists"}'),
    lines("", "", "", "", "", "400", '{"errorMessages":["bad"],"errors":{"accountId":"invalid"}}'),
])
