

async def test_create_publish_deliver(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})
    assert r.status_code == 201, r.text
    author = r.json()["data"]
    assert (await m.post(f"/v1/entries/author/{author['id']}/publish")).status_code == 200
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Déjà Vu, Again!", "rank": 3, "author": {"id": author["id"]}}})
    assert r.status_code == 201, r.text
    article = r.json()["data"]
    assert article["fields"]["slug"] == "deja-vu-again"
    assert article["status"] == "draft"
    r = await m.post(f"/v1/entries/article/{article['id']}/publish")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "published"
    d = await blog.reader()
    r = await d.get("/api/v1/entries/article/by-slug/deja-vu-again")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["fields"]["title"] == "Déjà Vu, Again!"
    r = await d.get("/api/v1/entries/article", params={"include": "author"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["total"] == 1
    assert body["data"][0]["fields"]["author"]["fields"]["name"] == "Ada"
    assert f"entry:{author['id']}" in r.headers["surrogate-key"]
