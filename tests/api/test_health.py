from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import app_client, make_settings


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """Readiness reflects the database: 503 when it cannot be reached."""
    settings = make_settings(
        tmp_path,
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        auto_migrate=False,
    )
    with app_client(settings) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unreachable"
