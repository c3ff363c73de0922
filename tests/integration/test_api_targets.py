"""Target URL rules at subscribe time, with ROWHOOK_ALLOW_PRIVATE_TARGETS off (the default)."""

from __future__ import annotations

from tests.integration.api_harness import PUBLIC_TARGET, Api, assert_problem

REFUSED = [
    ("http://93.184.215.14/hook", "plain http is refused"),
    ("https://127.0.0.1/hook", "loopback"),
    ("https://localhost:8443/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("https://192.168.0.10/hook", "private"),
    ("https://100.64.1.1/hook", "carrier-grade NAT"),
    ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("https://169.254.1.1/hook", "link-local"),
    ("https://[::1]/hook", "loopback"),
    ("https://[fd00:ec2::254]/hook", "cloud metadata"),
    ("https://[fd00::1]/hook", "unique local"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://0.0.0.0/hook", "'this network'"),
    ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook", "127.0.0.1 is a loopback address"),
    ("https://[2002:7f00:1::1]/hook", "6to4"),
    ("https://[64:ff9b::a00:1]/hook", "private address behind NAT64"),
    ("https://no-such-host.invalid/hook", "does not resolve"),
    ("https://user:pw@93.184.215.14/hook", "credentials"),
    ("/relative/path", "absolute https"),
    ("https:///nohost", "no host"),
    ("https://93.184.215.14:99999/hook", "not a valid URL"),
    ("https://93.184.215.14/a b", "spaces"),
]


def test_private_unresolvable_and_non_https_targets_are_refused(strict_api: Api) -> None:
    for url, reason in REFUSED:
        body = {"target_url": url, "resource": "tasks"}
        problem = assert_problem(strict_api.acme.post("/subscriptions", json=body), 422, "target_url", reason)
        assert problem["errors"][0]["field"] == "target_url"
    # What a name resolved to is not told: that would map the internal network for whoever asks.
    problem = strict_api.acme.post(
        "/subscriptions", json={"target_url": "https://localhost/", "resource": "tasks"}
    )
    assert_problem(problem, 422, "'localhost' resolves to a loopback address")
    assert "127.0.0.1" not in problem.text and "::1" not in problem.text
    assert strict_api.acme.get("/subscriptions").json()["items"] == []


def test_a_public_https_target_is_accepted_and_patch_is_checked_too(strict_api: Api) -> None:
    sub = strict_api.subscribe(target_url=PUBLIC_TARGET)
    assert sub["target_url"] == PUBLIC_TARGET
    refused = strict_api.acme.patch(f"/subscriptions/{sub['id']}", json={"target_url": "https://127.0.0.1/x"})
    assert_problem(refused, 422, "target_url", "loopback")
    assert_problem(
        strict_api.acme.post("/hooks", json={"target_url": "https://10.0.0.1/", "event": "tasks.created"}),
        422,
        "target_url",
    )
