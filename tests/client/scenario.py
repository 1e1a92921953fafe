"""Drives tmiDB with clients generated (unedited) by openapi-python-client from
openapi/tmidb.json (package tmidb_client) and openapi/ingest.json (package
tmidb_ingest_client): the happy path, then every documented error a client meets
(401, 403, 404, 409, 413, 429), each parsed into the documented ErrorBody, and a push
through the data-manager read back through the api.

Usage: scenario.py GENERATED_PARENT_DIR API_URL INGEST_URL ADMIN_PASSWORD MAX_UPLOAD_BYTES
Prints OK and exits 0 on success; any failure raises.
"""
import io
import sys
import time

sys.path.insert(0, sys.argv[1])
api_url, ingest_url, password, max_upload = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

from tmidb_client import AuthenticatedClient, Client  # noqa: E402
from tmidb_client.api.auth import create_token, login, whoami  # noqa: E402
from tmidb_client.api.categories import create_category, get_category, insert_records, query_records  # noqa: E402
from tmidb_client.api.files import upload_file  # noqa: E402
from tmidb_client.api.users import create_user  # noqa: E402
from tmidb_client.models import (  # noqa: E402
    ErrorBody,
    Field,
    FieldType,
    LoginRequest,
    NewCategory,
    NewToken,
    NewUser,
    Role,
    UploadFileBody,
)
from tmidb_client.types import File  # noqa: E402
import tmidb_ingest_client  # noqa: E402
from tmidb_ingest_client.api.default import push_records  # noqa: E402
from tmidb_ingest_client.models import PushRecordsJsonBodyItem  # noqa: E402
from tmidb_ingest_client.models import ErrorBody as IngestErrorBody  # noqa: E402

CATEGORY = "pyclient"


def error(response, status, code, cls=ErrorBody):
    """The response is `status` with the documented error body of `code`."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, cls), response.parsed
    assert response.parsed.code == code, response.parsed
    assert response.parsed.message, response.parsed
    assert isinstance(response.parsed.errors, list), response.parsed
    return response.parsed


def log_in(user, pw):
    s = login.sync(client=Client(base_url=api_url), body=LoginRequest(username=user, password=pw))
    assert s is not None and s.token.startswith("tmss_"), s
    return AuthenticatedClient(base_url=api_url, token=s.token)


api = log_in("admin", password)
me = whoami.sync(client=api)
assert me.username == "admin", me

created = create_category.sync_detailed(
    client=api,
    body=NewCategory(
        name=CATEGORY,
        description="made by the generated client",
        fields=[
            Field(name="temp", type_=FieldType.FLOAT, required=True, unit="C"),
            Field(name="station", type_=FieldType.TEXT),
        ],
    ),
)
assert created.status_code == 201, created
assert created.headers["location"] == f"/api/v1/categories/{CATEGORY}", created.headers
assert get_category.sync(name=CATEGORY, client=api).version == 1

result = insert_records.sync_detailed(
    name=CATEGORY,
    client=api,
    body=[
        {"target": "st-1", "ts": "2026-01-01T00:00:00Z", "temp": 1.5, "station": "north"},
        {"target": "st-1", "ts": "2026-01-01T00:01:00Z", "temp": 2.5},
        {"target": "st-2", "ts": "2026-01-01T00:00:00Z", "temp": "hot"},
    ],
)
assert result.status_code == 200, result
assert (result.parsed.accepted, result.parsed.rejected) == (2, 1), result.parsed
assert result.parsed.errors[0].field == "temp", result.parsed.errors

page = query_records.sync(name=CATEGORY, client=api, target="st-1")
temps = [r["temp"] for r in page.records]
assert temps == [1.5, 2.5], temps

# 401: no credentials, and a token that is not one.
error(whoami.sync_detailed(client=Client(base_url=api_url)), 401, "unauthorized")
error(whoami.sync_detailed(client=AuthenticatedClient(base_url=api_url, token="tmid_nope")), 401, "unauthorized")

# 403: a viewer cannot create a category.
viewer = create_user.sync_detailed(
    client=api, body=NewUser(username="py-viewer", password="viewer-password-1", role=Role.VIEWER)
)
assert viewer.status_code == 201, viewer
assert viewer.headers["location"] == f"/api/v1/users/{viewer.parsed.id}", viewer.headers
as_viewer = log_in("py-viewer", "viewer-password-1")
error(
    create_category.sync_detailed(
        client=as_viewer, body=NewCategory(name="nope", fields=[Field(name="x", type_=FieldType.INT)])
    ),
    403,
    "forbidden",
)

# 404 and 409.
error(get_category.sync_detailed(name="no_such_category", client=api), 404, "not_found")
error(
    create_category.sync_detailed(
        client=api, body=NewCategory(name=CATEGORY, fields=[Field(name="x", type_=FieldType.INT)])
    ),
    409,
    "conflict",
)

# 413: an upload above api.max_upload_bytes.
big = upload_file.sync_detailed(
    client=api,
    body=UploadFileBody(file=File(payload=io.BytesIO(b"x" * (max_upload * 2)), file_name="big.bin")),
)
error(big, 413, "too_large")

# 429: repeated failed logins for one user name, with Retry-After.
for _ in range(5):
    r = login.sync_detailed(client=Client(base_url=api_url), body=LoginRequest(username="py-viewer", password="wrong"))
    error(r, 401, "unauthorized")
throttled = login.sync_detailed(client=Client(base_url=api_url), body=LoginRequest(username="py-viewer", password="wrong"))
error(throttled, 429, "too_many_requests")
assert int(throttled.headers["retry-after"]) > 0, throttled.headers

# A push through the data-manager with a write token, read back through the api.
token = create_token.sync_detailed(client=api, body=NewToken(name="py-push", scopes=[f"write:{CATEGORY}"]))
assert token.status_code == 201, token
pusher = tmidb_ingest_client.AuthenticatedClient(base_url=ingest_url, token=token.parsed.token)


def item(target, ts, **fields):
    i = PushRecordsJsonBodyItem()
    i.additional_properties = {"target": target, "ts": ts, **fields}
    return i


pushed = push_records.sync_detailed(
    category=CATEGORY,
    client=pusher,
    body=[item("st-3", "2026-01-02T00:00:00Z", temp=7.5), item("st-3", "2026-01-02T00:01:00Z", temp="warm")],
)
assert pushed.status_code == 202, (pushed.status_code, pushed.content)
assert (pushed.parsed.accepted, pushed.parsed.rejected) == (1, 1), pushed.parsed
assert pushed.parsed.errors[0].index == 1 and pushed.parsed.errors[0].field == "temp", pushed.parsed.errors
error(
    push_records.sync_detailed(
        category=CATEGORY, client=tmidb_ingest_client.Client(base_url=ingest_url), body=[item("st-3", "2026-01-02T00:02:00Z", temp=1.0)]
    ),
    401,
    "unauthorized",
    IngestErrorBody,
)
error(
    push_records.sync_detailed(category="no_such_category", client=pusher, body=[item("a", "2026-01-02T00:00:00Z")]),
    403,
    "forbidden",
    IngestErrorBody,
)
deadline = time.time() + 30
while True:
    page = query_records.sync(name=CATEGORY, client=api, target="st-3")
    if [r["temp"] for r in page.records] == [7.5]:
        break
    assert time.time() < deadline, page.records
    time.sleep(0.2)
print("OK")
