"""The agent console's files are Parley's own (no CDN), served under a strict Content
Security Policy; /v1/me tells the console who it is."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import app_client, make_settings

BOOTSTRAP = "bootstrap-secret"


def test_the_console_is_served_from_the_package_and_loads_nothing_from_elsewhere(
    tmp_path: Path,
) -> None:
    with app_client(make_settings(tmp_path)) as client:
        assert client.get("/agent", follow_redirects=False).headers["location"] == "/agent/"
        page = client.get("/agent/")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self'" in policy
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources == ["console.css", "console.js"]  # relative: this server's own
        for source in sources:
            assert client.get(f"/agent/{source}").status_code == 200
        assert client.get("/").json()["agent_console"] == "/agent/"


def test_me_names_the_calling_key_and_its_role(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path, api_keys=BOOTSTRAP)) as client:
        admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
        made = client.post("/v1/keys/", json={"name": "ann", "role": "agent"}, headers=admin)
        agent = {"Authorization": f"Bearer {made.json()['secret']}"}
        assert client.get("/v1/me", headers=agent).json() == {"name": "ann", "role": "agent"}
        assert client.get("/v1/me", headers=admin).json() == {
            "name": "bootstrap-1",
            "role": "admin",
        }
        assert client.get("/v1/me").status_code == 401
