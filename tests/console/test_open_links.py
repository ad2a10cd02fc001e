"""Open in my hub: /open links validated field by field, sent straight to nbgitpuller on the person's one hub, a
chooser among several, never a word about other institutions' hubs, and a visitor brought back after logging in.

Through HTTP (test clients acting as separate browsers) and the real database; hubs on the fake backend."""
from __future__ import annotations

from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest

from console.extensions import db
from console.services import FieldErrors, memberships, open_links
from console.services.open_links import OpenRequest
from tests.conftest import PASSWORD, csrf_from
from tests.console import test_memberships

REPO = "https://git.example.org/course/intro-python.git"
# The fixtures of the membership tests: North (nhub1, nhub2) and South (shub1) on the fake backend, and browsers.
fleet, browser, client = test_memberships.fleet, test_memberships.browser, test_memberships.client


def open_url(**query) -> str:
    return "/open?" + urlencode(query)


@pytest.fixture
def member(fleet, create_user):
    """A member of North's nhub1 only."""
    person = create_user("member", email="ola@north.example")
    memberships.grant(person, hub=fleet["hubs"]["nhub1"], source="operator")
    db.session.commit()
    return person


# -- the pure parts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, field", [
    ({}, "repo"),
    ({"repo": "file:///etc"}, "repo"),
    ({"repo": "-u"}, "repo"),
    ({"repo": "--upload-pack=touch /tmp/x"}, "repo"),
    ({"repo": "ext::sh -c touch% /tmp/pwned"}, "repo"),
    ({"repo": "ssh://git@example.org/x.git"}, "repo"),
    ({"repo": "git@example.org:x/y.git"}, "repo"),
    ({"repo": "https://example.org/x.git\n-c core.sshCommand=x"}, "repo"),
    ({"repo": "https://example.org/a b.git"}, "repo"),
    ({"repo": "https://example.org/" + "x" * 2000}, "repo"),
    ({"repo": "https://user:secret@example.org/x.git"}, "repo"),
    ({"repo": "https://example.org:99999999/x.git"}, "repo"),
    ({"repo": "https://example.org:port/x.git"}, "repo"),
    ({"repo": "https:///x.git"}, "repo"),
    ({"repo": "https://example.org/"}, "repo"),
    ({"repo": "https://example.org/..", "path": "x"}, "repo"),
    ({"repo": "https://example.org/-x"}, "repo"),
    ({"repo": "https://example.org/x.git?upload-pack=y"}, "repo"),
    ({"repo": "javascript:alert(1)//x.git"}, "repo"),
    ({"repo": "https://example.org/x\x00.git"}, "repo"),
    ({"repo": REPO, "branch": "-f"}, "branch"),
    ({"repo": REPO, "branch": "a..b"}, "branch"),
    ({"repo": REPO, "branch": "main tree"}, "branch"),
    ({"repo": REPO, "branch": "x" * 251}, "branch"),
    ({"repo": REPO, "branch": "feature/.hidden"}, "branch"),
    ({"repo": REPO, "branch": "a:b"}, "branch"),
    ({"repo": REPO, "branch": "main.lock"}, "branch"),
    ({"repo": REPO, "branch": "x@{1}"}, "branch"),
    ({"repo": REPO, "path": "../../x"}, "path"),
    ({"repo": REPO, "path": "week1/../../x"}, "path"),
    ({"repo": REPO, "path": "/etc/passwd"}, "path"),
    ({"repo": REPO, "path": "a\nb"}, "path"),
    ({"repo": REPO, "path": "a\\b"}, "path"),
    ({"repo": REPO, "path": "p" * 1001}, "path"),
    ({"repo": REPO, "hub": "../nhub1"}, "hub"),
    ({"repo": REPO, "hub": "NHUB1"}, "hub"),
])
def test_each_field_is_checked(query, field):
    with pytest.raises(FieldErrors) as caught:
        open_links.parse(query)
    assert list(caught.value.errors) == [field]


def test_good_links_parse_and_name_the_clone_folder():
    parsed = open_links.parse({"repo": REPO, "branch": "fall-2026/week.1", "path": "week 1/intro.ipynb",
                               "hub": "nhub1"})
    assert parsed == OpenRequest(REPO, "fall-2026/week.1", "week 1/intro.ipynb", "nhub1")
    assert parsed.repo_dir == "intro-python"
    assert open_links.parse({"repo": "http://127.0.0.1:8000/notes/"}).repo_dir == "notes"
    assert open_links.parse({"repo": "HTTPS://example.org/x/Course_1"}).repo_dir == "Course_1"


def test_the_nbgitpuller_link_encodes_every_value():
    wanted = OpenRequest(REPO, "main", "week 1/intro&more.ipynb", "")
    url = open_links.pull_url("http://nhub1.fake.invalid", wanted)
    assert url == ("http://nhub1.fake.invalid/hub/user-redirect/git-pull"
                   "?repo=https%3A%2F%2Fgit.example.org%2Fcourse%2Fintro-python.git&branch=main"
                   "&targetpath=intro-python"
                   "&urlpath=lab%2Ftree%2Fintro-python%2Fweek%25201%2Fintro%2526more.ipynb")
    query = parse_qs(urlsplit(url).query)
    assert query["urlpath"] == ["lab/tree/intro-python/" + quote("week 1/intro&more.ipynb")]
    assert open_links.pull_url("http://h/", OpenRequest(REPO, "", "", "")).endswith(
        "?repo=https%3A%2F%2Fgit.example.org%2Fcourse%2Fintro-python.git&targetpath=intro-python"
        "&urlpath=lab%2Ftree%2Fintro-python")


# -- the route ------------------------------------------------------------------------------------------------------


HOSTILE = [
    {"repo": "file:///etc"}, {"repo": "-u"}, {"repo": "https://e.org/x.git\r\nSet-Cookie: a=b"},
    {"repo": "https://e.org/" + "x" * 5000}, {"repo": REPO, "path": "../../x"}, {"repo": "<script>x</script>"},
    {"repo": REPO, "branch": "--upload-pack=x"}, {"repo": "https://e.org/x.git", "hub": "x" * 3000},
]


def test_hostile_links_answer_400_with_the_field_named(member, browser):
    signed_in = browser(member)
    for query in HOSTILE:
        response = signed_in.get(open_url(**query))
        html = response.get_data(as_text=True)
        assert response.status_code == 400, (query, html)
        assert "This link cannot be opened" in html and "<script>x" not in html
        named = {part.split('"')[0] for part in html.split('data-field="')[1:]}
        assert named and named <= set(query) | {"repo"}, query


def test_broken_percent_escapes_and_repeated_fields_never_fail(member, browser):
    web = browser(member)
    assert web.get("/open?repo=%ff%fe&path=%c3").status_code == 400
    assert web.get("/open?repo=x&path=%00").status_code == 422  # no request may carry NUL (console/limits.py)
    assert web.get("/open?repo=" + quote(REPO, safe="") + "&repo=file:///etc").status_code == 302  # the first


def test_one_hub_goes_straight_to_nbgitpuller_there(member, browser):
    response = browser(member).get(open_url(repo=REPO, branch="main", path="week1/intro.ipynb"))
    assert response.status_code == 302
    assert response.headers["Location"] == (
        "http://nhub1.fake.invalid/hub/user-redirect/git-pull?repo=https%3A%2F%2Fgit.example.org%2Fcourse%2F"
        "intro-python.git&branch=main&targetpath=intro-python&urlpath=lab%2Ftree%2Fintro-python%2Fweek1%2F"
        "intro.ipynb")


def test_several_hubs_show_a_chooser_and_hub_picks_one(fleet, member, browser):
    memberships.grant(member, hub=fleet["hubs"]["shub1"], source="invitation", ref="3")
    memberships.grant(member, hub=fleet["hubs"]["nhub2"], source="operator")
    fleet["hubs"]["nhub2"].state = "failed"
    db.session.commit()
    web = browser(member)
    tricky = REPO.replace("intro-python", "a_b") + "/"
    page = web.get(open_url(repo=tricky, path='x"><script>alert(1)</script>.ipynb'))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert {"open-hub-nhub1", "open-hub-shub1", "open-hub-nhub2"} <= {
        part.split('"')[0] for part in html.split('id="')[1:]}
    assert "North College" in html and "South University" in html
    assert html.count(">Open here</a>") == 2 and "The hub is failed, not running." in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    wanted = OpenRequest(tricky, "", 'x"><script>alert(1)</script>.ipynb', "")
    assert f'href="{open_links.pull_url("http://shub1.fake.invalid/", wanted).replace("&", "&amp;")}"' in html
    picked = web.get(open_url(repo=REPO, hub="shub1"))
    assert picked.status_code == 302 and picked.headers["Location"].startswith(
        "http://shub1.fake.invalid/hub/user-redirect/git-pull?repo=")
    failed = web.get(open_url(repo=REPO, hub="nhub2")).get_data(as_text=True)
    assert "The hub is failed, not running." in failed and ">Open here</a>" not in failed


def test_another_institutions_hub_is_never_revealed(fleet, member, browser):
    web = browser(member)
    foreign = web.get(open_url(repo=REPO, hub="shub1"))
    unknown = web.get(open_url(repo=REPO, hub="no-such-hub"))
    assert foreign.status_code == unknown.status_code == 200
    texts = [r.get_data(as_text=True) for r in (foreign, unknown)]
    assert "South University" not in texts[0] and "shub1.fake.invalid" not in texts[0]
    assert texts[0].replace("shub1", "X") == texts[1].replace("no-such-hub", "X")
    assert 'id="open-no-hub"' in texts[0] and 'href="/me/hubs"' in texts[0]


def test_someone_in_no_hub_is_sent_to_my_hubs(fleet, create_user, browser):
    html = browser(create_user("member")).get(open_url(repo=REPO)).get_data(as_text=True)
    assert "You belong to no hub that can open it." in html and 'href="/me/hubs"' in html


def test_a_visitor_logs_in_and_comes_back_to_the_same_link(member, browser):
    link = open_url(repo=REPO, branch="main", path="week1/intro.ipynb")
    visitor = browser()
    response = visitor.get(link)
    assert response.status_code == 302
    login = response.headers["Location"]
    assert urlsplit(login).path == "/login" and parse_qs(urlsplit(login).query)["next"] == [link]
    token = csrf_from(visitor.get(login).get_data(as_text=True))
    logged_in = visitor.post(login, data={"email": member.email, "password": PASSWORD, "csrf_token": token})
    assert logged_in.headers["Location"] == link
    landed = visitor.get(link)
    assert landed.status_code == 302 and landed.headers["Location"].startswith("http://nhub1.fake.invalid/hub/")
