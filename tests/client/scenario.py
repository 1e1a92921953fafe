"""Drives tmiDB with a client generated (unedited) from openapi/tmidb.json by
openapi-python-client: log in, create a category, insert records, query them back.

Usage: scenario.py GENERATED_PARENT_DIR BASE_URL ADMIN_PASSWORD CATEGORY
Prints OK and exits 0 on success; any failure raises.
"""
import sys

sys.path.insert(0, sys.argv[1])
base_url, password, category = sys.argv[2], sys.argv[3], sys.argv[4]

from tmidb_client import AuthenticatedClient, Client  # noqa: E402
from tmidb_client.api.auth import login, whoami  # noqa: E402
from tmidb_client.api.categories import create_category, get_category, insert_records, query_records  # noqa: E402
from tmidb_client.models import Field, FieldType, LoginRequest, NewCategory  # noqa: E402

session = login.sync(client=Client(base_url=base_url), body=LoginRequest(username="admin", password=password))
assert session is not None and session.token.startswith("tmss_"), session
api = AuthenticatedClient(base_url=base_url, token=session.token)
me = whoami.sync(client=api)
assert me.username == "admin", me

created = create_category.sync_detailed(
    client=api,
    body=NewCategory(
        name=category,
        description="made by the generated client",
        fields=[
            Field(name="temp", type_=FieldType.FLOAT, required=True, unit="C"),
            Field(name="station", type_=FieldType.TEXT),
        ],
    ),
)
assert created.status_code == 201, created
assert get_category.sync(name=category, client=api).version == 1

result = insert_records.sync_detailed(
    name=category,
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

page = query_records.sync(name=category, client=api, target="st-1")
temps = [r["temp"] for r in page.records]
assert temps == [1.5, 2.5], temps
print("OK")
