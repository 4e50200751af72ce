from pathlib import Path

from parley.api.state import state_of
from tests.conftest import app_client, make_settings


def test_auth_is_off_by_default(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path)) as client:
        assert client.get("/v1/goals/").status_code == 200


def test_api_keys_guard_v1_but_not_health(tmp_path: Path) -> None:
    """With PARLEY_API_KEYS set, /v1 needs a key (Bearer or X-API-Key); probes stay open."""
    settings = make_settings(tmp_path, api_keys="key-one, key-two")
    with app_client(settings) as client:
        missing = client.get("/v1/goals/")
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert (
            client.get("/v1/goals/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert (
            client.get("/v1/goals/", headers={"Authorization": "Bearer key-two"}).status_code == 200
        )
        assert client.get("/v1/goals/", headers={"X-API-Key": "key-one"}).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_keys_are_kept_only_as_digests(tmp_path: Path) -> None:
    """Nothing the app holds on to carries a key in the clear."""
    settings = make_settings(tmp_path, api_keys="key-in-the-clear")
    with app_client(settings) as client:
        state = state_of(client.app)  # type: ignore[arg-type]
        assert state.settings.api_keys == []
        assert "key-in-the-clear" not in repr(vars(state.services.keys))
        assert (
            client.get("/v1/goals/", headers={"X-API-Key": "key-in-the-clear"}).status_code == 200
        )
